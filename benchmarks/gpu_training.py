"""The GPU profile's training, Unsloth against plain transformers + PEFT + bitsandbytes QLoRA, in one run.

Both backends train the same LoRA (the gpu profile's r, alpha and target modules) with the same TRL SFTConfig
(the reference's batch 2 × accumulation 4, lr 2e-4, adamw_8bit, ...) on the same records, each in its own process
(importing Unsloth patches transformers for the whole process). The model is the local SmolLM2 folder, since the GPU
machine cannot download Llama-3-8B:

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


def benchmark_profile(model: str, examples: int):
    from helpers.config import gpu_profile

    return replace(gpu_profile(), model_name=str(Path(model).resolve()), train_examples=examples, epochs=1)


def train_with_unsloth(profile) -> dict:
    from helpers import training

    model, tokenizer = training.load_base_model(profile)
    model = training.add_lora(model, profile)
    trainable = training.count_trainable_parameters(model)
    trainer = training.build_trainer(model, tokenizer, training.training_dataset(profile, tokenizer), profile)
    return {"trainable_parameters": trainable, **training.train_with_stats(trainer).__dict__}


def train_with_plain_peft(profile) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from helpers import training

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    tokenizer = AutoTokenizer.from_pretrained(profile.model_name)
    model = AutoModelForCausalLM.from_pretrained(profile.model_name, quantization_config=quantization,
                                                 dtype=torch.bfloat16, device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha,
                                             lora_dropout=profile.lora_dropout, bias="none",
                                             target_modules=list(profile.lora_targets), task_type="CAUSAL_LM"))
    trainable = training.count_trainable_parameters(model)
    trainer = training.build_trainer(model, tokenizer, training.training_dataset(profile, tokenizer), profile,
                                     gradient_checkpointing=True, bf16=True)
    return {"trainable_parameters": trainable, **training.train_with_stats(trainer).__dict__}


def run_backend(backend: str, model: str, examples: int) -> dict:
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as Unsloth requires)
    profile = benchmark_profile(model, examples)
    result = train_with_unsloth(profile) if backend == "unsloth" else train_with_plain_peft(profile)
    result.pop("losses", None)
    return {"backend": backend, **result}


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
        print(json.dumps({key: result.get(key) for key in ("backend", "device", "trainable_parameters", "steps",
                                                            "samples", "wall_seconds", "samples_per_second",
                                                            "tokens_per_second", "first_loss", "last_loss",
                                                            "peak_memory_gb", "error")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
