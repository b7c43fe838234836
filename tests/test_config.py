"""The profile and path promises: one config object, chosen by hardware or an environment variable."""
from pathlib import Path

import pytest

from helpers import config


def test_cpu_is_the_default_without_cuda(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV_VAR, raising=False)
    monkeypatch.setattr(config, "cuda_available", lambda: False)
    assert config.active_profile(verbose=False).name == "cpu"


def test_gpu_is_the_default_with_cuda(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV_VAR, raising=False)
    monkeypatch.setattr(config, "cuda_available", lambda: True)
    assert config.active_profile(verbose=False).name == "gpu"


def test_environment_variable_overrides_the_hardware(monkeypatch):
    monkeypatch.setattr(config, "cuda_available", lambda: True)
    monkeypatch.setenv(config.PROFILE_ENV_VAR, "CPU")
    assert config.active_profile(verbose=False).name == "cpu"


def test_unknown_profile_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="COURSE_PROFILE='tpu'"):
        config.active_profile(verbose=False)


def test_gpu_profile_carries_the_reference_training_settings():
    gpu = config.gpu_profile()
    assert gpu.model_name == "unsloth/llama-3-8b-bnb-4bit"
    assert (gpu.batch_size, gpu.gradient_accumulation_steps, gpu.learning_rate) == (2, 4, 2e-4)
    assert (gpu.warmup_steps, gpu.weight_decay, gpu.lr_scheduler_type) == (5, 0.01, "linear")
    assert (gpu.optim, gpu.max_grad_norm, gpu.seed) == ("adamw_8bit", 0.3, 3407)
    assert (gpu.train_examples, gpu.epochs, gpu.max_new_tokens, gpu.retriever_k) == (5000, 2, 128, 3)
    assert gpu.lora_r == 32


def test_cpu_profile_uses_local_models_only():
    cpu = config.cpu_profile()
    assert Path(cpu.model_name).is_relative_to(config.paths().root)
    assert Path(cpu.embedding_model).name == "model"
    assert cpu.load_in_4bit


def test_profile_summary_names_no_absolute_path():
    # Notebooks print the summary; an absolute path would differ between clones and break nbval.
    summary = config.cpu_profile().summary()
    assert "/" not in summary.replace("k=", "")
    assert summary.startswith("cpu · SmolLM2-135M-Instruct · 4-bit")


def test_paths_are_resolved_from_the_repo_root():
    paths = config.paths()
    assert (paths.root / "pyproject.toml").is_file()
    assert paths.raw_sample == paths.root / "data" / "raw" / "trn.json"
    assert paths.figures.is_relative_to(paths.outputs)


def test_repo_root_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv(config.ROOT_ENV_VAR, str(tmp_path))
    assert config._find_repo_root() == tmp_path.resolve()
