"""The GPU profile's training, Unsloth against plain transformers + PEFT + bitsandbytes QLoRA, in one run.

Both backends train the same LoRA (the gpu profile's r, alpha and target modules) with the same TRL SFTConfig
(helpers.training.trainer.build_trainer with no overrides: the reference's batch 2 × accumulation 4, lr 2e-4,
adamw_8bit, ...) on the same records, and are measured by the same helpers.training.statistics.train_with_stats. Each
runs in its own process, because importing Unsloth patches transformers, TRL and PEFT for the whole process: the plain
process imports only helpers.config, data, prompts and training's records, trainer and statistics, none of which
imports Unsloth, and it checks
that Unsloth is absent before it trains. This parent process imports no Unsloth either. The model is the local
SmolLM2 folder, since the GPU machine cannot download Llama-3-8B:

    COURSE_PROFILE=gpu python benchmarks/gpu_training.py --model data/models/SmolLM2-135M-Instruct --examples 400

Writes outputs/benchmarks/gpu_training.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

BACKENDS = ("unsloth", "plain")
# SFTConfig fields recorded per backend, beyond the profile's own (helpers.training.trainer.sft_settings): TRL's
# defaults for these two differ from transformers', and Unsloth may adjust the arguments it is given.
RECORDED_TRAINER_ARGUMENTS = ("bf16", "fp16", "gradient_checkpointing")


def benchmark_profile(model: str, examples: int):
    from helpers.config import gpu_profile

    return replace(gpu_profile(), model_name=str(Path(model).resolve()), train_examples=examples, epochs=1)


def trainable_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def trainer_arguments(trainer, profile) -> dict:
    """The SFTConfig values the trainer really ran with, for the fields both backends must share."""
    from helpers.training.trainer import sft_settings

    actual = trainer.args.to_dict()
    return {key: actual.get(key) for key in (*sft_settings(profile), *RECORDED_TRAINER_ARGUMENTS)}


def result_of(trainer, model, profile) -> dict:
    from helpers.training.statistics import train_with_stats

    trainable = trainable_parameters(model)
    stats = train_with_stats(trainer)
    return {"trainable_parameters": trainable, "unsloth_imported": "unsloth" in sys.modules,
            "sft_config": trainer_arguments(trainer, profile), **stats.__dict__}


def train_with_unsloth(profile) -> dict:
    import unsloth  # noqa: F401  (before transformers, as Unsloth requires)

    from helpers import training

    model, tokenizer = training.adapter.load_base_model(profile)
    model = training.adapter.add_lora(model, profile)
    dataset = training.records.training_dataset(profile, tokenizer)
    trainer = training.trainer.build_trainer(model, tokenizer, dataset, profile)
    return result_of(trainer, model, profile)


def plain_backend_imports():
    """Everything the plain backend imports, short of loading a model: no module here imports Unsloth.

    tests/test_measurement.py calls this in a fresh process and checks that "unsloth" is not in sys.modules.
    """
    import peft
    import torch
    import transformers

    from helpers import config, data, prompts  # noqa: F401  (the course modules the backend uses)
    from helpers.training import records, statistics, trainer  # noqa: F401

    return torch, transformers, peft, records, trainer


def train_with_plain_peft(profile) -> dict:
    torch, transformers, peft, records, trainer_settings = plain_backend_imports()

    quantization = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_compute_dtype=torch.bfloat16,
                                                   bnb_4bit_use_double_quant=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(profile.model_name)
    model = transformers.AutoModelForCausalLM.from_pretrained(profile.model_name, quantization_config=quantization,
                                                              dtype=torch.bfloat16, device_map={"": 0})
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = peft.get_peft_model(model, peft.LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha,
                                                       lora_dropout=profile.lora_dropout, bias="none",
                                                       target_modules=list(profile.lora_targets),
                                                       task_type="CAUSAL_LM"))
    trainer = trainer_settings.build_trainer(model, tokenizer, records.training_dataset(profile, tokenizer), profile)
    assert "unsloth" not in sys.modules, (
        "The plain QLoRA baseline imported Unsloth, which patches transformers, TRL and PEFT: it would measure "
        f"Unsloth, not the plain stack. Unsloth modules loaded: {sorted(m for m in sys.modules if 'unsloth' in m)}")
    return result_of(trainer, model, profile)


def run_backend(backend: str, model: str, examples: int) -> dict:
    profile = benchmark_profile(model, examples)
    result = train_with_unsloth(profile) if backend == "unsloth" else train_with_plain_peft(profile)
    result.pop("losses", None)
    return {"backend": backend, **result}


def differing_trainer_arguments(results: list[dict]) -> dict:
    """SFTConfig fields on which the backends that finished trained differently (should be empty)."""
    configs = [result["sft_config"] for result in results if "sft_config" in result]
    if len(configs) < 2:
        return {}
    return {key: [config.get(key) for config in configs] for key in configs[0]
            if any(config.get(key) != configs[0][key] for config in configs[1:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--backend", choices=BACKENDS)
    args = parser.parse_args()
    if args.backend:
        print("RESULT " + json.dumps(run_backend(args.backend, args.model, args.examples)), flush=True)
        return 0
    results = []
    for backend in BACKENDS:
        completed = subprocess.run([sys.executable, __file__, "--model", args.model, "--examples",
                                    str(args.examples), "--backend", backend], capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode or not lines:
            print(completed.stdout[-3000:], completed.stderr[-5000:], sep="\n")
            results.append({"backend": backend, "error": completed.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
    from helpers.config import paths

    target = paths().benchmarks / "gpu_training.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2))
    for result in results:
        print(json.dumps({key: result.get(key) for key in ("backend", "device", "unsloth_imported",
                                                            "trainable_parameters", "steps", "samples", "tokens",
                                                            "wall_seconds", "samples_per_second",
                                                            "tokens_per_second", "first_loss", "last_loss",
                                                            "peak_memory_gb", "error")}))
    differing = differing_trainer_arguments(results)
    if differing:
        print(f"WARNING: the backends trained with different SFTConfig values, so the comparison is not like for "
              f"like: {differing}")
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
