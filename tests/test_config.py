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


# --- Offline exactly when the active profile's models are local -------------------------------------------------

OFFLINE_PROBE = """
import sys, torch
torch.cuda.is_available = lambda: {cuda}
import os, helpers
helpers.config.active_profile(verbose=False)
print(os.environ.get("HF_HUB_OFFLINE", "unset"))
"""


def hub_offline_after_import(profile_variable: str | None, cuda: bool) -> str:
    """HF_HUB_OFFLINE as the active profile leaves it in a fresh process, CUDA faked present or absent."""
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HF_HUB_OFFLINE", config.PROFILE_ENV_VAR, "COURSE_GPU_MODEL")}
    if profile_variable is not None:
        environment[config.PROFILE_ENV_VAR] = profile_variable
    result = subprocess.run([sys.executable, "-c", OFFLINE_PROBE.format(cuda=cuda)], env=environment,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("profile_variable, cuda, offline", [
    (None, False, "1"),       # cpu by default: local models, offline
    (None, True, "unset"),    # gpu chosen by the hardware: it must be able to download its model
    ("cpu", True, "1"),
    ("CPU", False, "1"),
    ("gpu", False, "unset"),
    ("GPU", False, "unset"),  # the name is case-insensitive, and so is the offline decision
    (" Gpu ", True, "unset"),
])
def test_offline_exactly_when_the_active_profile_models_are_local(profile_variable, cuda, offline):
    assert hub_offline_after_import(profile_variable, cuda) == offline


def test_a_local_gpu_model_keeps_the_gpu_profile_offline(monkeypatch):
    monkeypatch.setenv("COURSE_GPU_MODEL", str(config.local_smollm2_dir()))
    assert config.gpu_profile().models_are_local
    monkeypatch.delenv("COURSE_GPU_MODEL")
    assert not config.gpu_profile().models_are_local


def test_cpu_numerics_are_pinned_before_torch_is_imported():
    import os

    # conftest set the active profile's environment before torch: Unsloth's float32 path and the AVX2 kernels.
    for name, value in config.CPU_NUMERICS.items():
        assert os.environ[name] == value


def test_an_unknown_profile_name_does_not_break_importing_the_stages():
    # Reported by active_profile(), where a notebook or script asks for its profile; `python -m helpers.data` and the
    # set-up (helpers.assets) still run.
    import os
    import subprocess
    import sys

    environment = {**os.environ, config.PROFILE_ENV_VAR: "tpu"}
    probe = "import helpers.data, helpers.assets; from helpers import config; config.active_profile()"
    result = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True)
    assert result.returncode != 0 and "COURSE_PROFILE='tpu'" in result.stderr
    assert "helpers/__init__.py" not in result.stderr, "the import itself failed"
