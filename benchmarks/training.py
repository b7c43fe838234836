"""Training and generation benchmark on the CPU profile, both sides in the same run.

    python benchmarks/training.py              # ~3 minutes on 2 cores
    python benchmarks/training.py --steps 4    # quicker, noisier

Training: the profile's SFTConfig (batches padded to their longest example, similar lengths grouped by
train_sampling_strategy="group_by_length") against a naive configuration (every example padded to max_length,
random order, no packing), each on a fresh 4-bit model with a fresh LoRA, same examples, same seed. Packing is not
used: without FlashAttention, which CPUs lack, packed examples would attend to each other.

Generation: held-out prompts greedy in batches of generation_batch_size against one prompt at a time; the answers
must be identical, so the tokens generated are the same on both sides.

Results go to outputs/benchmarks/training.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import helpers.models as models  # first: Unsloth patches transformers, TRL and PEFT on import
from helpers.config import cpu_profile, paths
from helpers.data import load_processed
from helpers.prompts import format_prompt
from transformers import TrainerCallback

from helpers.training.adapter import add_lora, load_base_model
from helpers.training.trainer import build_trainer
from helpers.training.statistics import train_with_stats
from helpers.training.records import training_dataset

RESULTS_FILE = "training.json"


class StepClock(TrainerCallback):
    """When each optimizer step ended: the first step carries one-off warm-up, so steady speed is measured after it."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def train_once(profile, steps: int, **overrides) -> dict:
    model, tokenizer = load_base_model(profile)
    model = add_lora(model, profile)
    trainer = build_trainer(model, tokenizer, training_dataset(profile, tokenizer), profile, max_steps=steps,
                            **overrides)
    clock = StepClock()
    trainer.add_callback(clock)
    stats = train_with_stats(trainer)
    steady_seconds = clock.ends[-1] - clock.ends[1]
    steady_samples = (steps - 1) * profile.batch_size * profile.gradient_accumulation_steps
    return {**stats.__dict__, "step_seconds": [round(b - a, 2) for a, b in zip(clock.ends, clock.ends[1:])],
            "samples_per_second_after_first_step": round(steady_samples / steady_seconds, 3)}


def training_comparison(profile, steps: int) -> dict:
    naive = train_once(profile, steps, pad_to_multiple_of=profile.max_seq_length, train_sampling_strategy="random")
    ours = train_once(profile, steps)
    return {
        "steps": steps,
        "batch_size": profile.batch_size,
        "naive (pad to max_length, random order, no packing)": naive,
        "ours (pad to longest in batch, group_by_length)": ours,
        "speed-up samples/s": round(ours["samples_per_second"] / naive["samples_per_second"], 2),
        "speed-up samples/s after the first step": round(
            ours["samples_per_second_after_first_step"] / naive["samples_per_second_after_first_step"], 2),
    }


def generation_comparison(profile, prompts: int) -> dict:
    model, tokenizer = models.load_model(profile, verbose=False)
    _, heldout = load_processed(profile)
    batch = [format_prompt(product) for product in heldout["product"][:prompts]]
    models.generate(model, tokenizer, batch[:1], profile, progress=False)  # warm-up
    start = time.perf_counter()
    batched = models.generate(model, tokenizer, batch, profile, progress=False)
    batched_seconds = time.perf_counter() - start
    start = time.perf_counter()
    single = [models.generate(model, tokenizer, [prompt], profile, progress=False)[0] for prompt in batch]
    single_seconds = time.perf_counter() - start
    batched_tokens, single_tokens = answer_tokens(tokenizer, batched), answer_tokens(tokenizer, single)
    return {
        "prompts": prompts,
        "batch_size": profile.generation_batch_size,
        "max_new_tokens": profile.max_new_tokens,
        "identical_answers": sum(a == b for a, b in zip(batched, single)),
        "one_at_a_time": {"seconds": round(single_seconds, 2), "tokens": single_tokens,
                          "tokens_per_second": round(single_tokens / single_seconds, 1)},
        "batched": {"seconds": round(batched_seconds, 2), "tokens": batched_tokens,
                    "tokens_per_second": round(batched_tokens / batched_seconds, 1)},
        "speed-up tokens/s": round((batched_tokens / batched_seconds) / (single_tokens / single_seconds), 2),
    }


def answer_tokens(tokenizer, answers: list[str]) -> int:
    return sum(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()
    profile = cpu_profile()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {models.torch.get_num_threads()} threads",
        "profile": profile.summary(),
        "training": training_comparison(profile, args.steps),
        "generation": generation_comparison(profile, args.prompts),
    }
    paths().benchmarks.mkdir(parents=True, exist_ok=True)
    (paths().benchmarks / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    training, generation = results["training"], results["generation"]
    print(f"training: {training['speed-up samples/s']}× samples/s over the naive configuration "
          f"({training['speed-up samples/s after the first step']}× after the first step)")
    print(f"generation: {generation['speed-up tokens/s']}× tokens/s batched "
          f"({generation['identical_answers']}/{generation['prompts']} answers identical)")
    print(f"written to {paths().benchmarks / RESULTS_FILE}")


if __name__ == "__main__":
    main()
