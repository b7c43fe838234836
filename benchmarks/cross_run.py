"""How far a retraining moves the fine-tuned systems' numbers: the evidence the checked cells' margins rest on.

The base model's greedy answers reproduce on every CPU measured; a fine-tune does not train bit for bit the same on
two CPUs (an AVX2 AMD EPYC and an AVX-512 Intel Xeon parted at training step 10), so its answers, and every number
computed from them, move. This script trains the cpu profile's adapter once more with another training seed (LoRA's
initial weights and the order of the examples; the data, the kinds of example, the prompts and the evaluation products
stay the profile's), answers notebook 06's products with it, and writes what the tests need beside the committed
run's:

    tests/fixtures/cross_run/<name>/comparison_answers.csv   the answers (unscored: the tests score them)
    tests/fixtures/cross_run/<name>/training_losses.json     the per-step losses

    python benchmarks/cross_run.py --committed               # the committed run's files (after `make course`)
    python benchmarks/cross_run.py --training-seed 1234      # another training: ~20 minutes on 2 cores

A new seed moves more than a new CPU does (everything about the training changes, not the last bits of its
arithmetic), so margins that cover it are on the safe side. tests/test_cross_run.py computes every checked claim
from each run and asserts they agree, and that the margins cover the drift measured here.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import helpers.models  # noqa: F401  (first: Unsloth patches transformers, TRL and PEFT on import)
from helpers import data, evaluation, retrieval, training
from helpers.config import cpu_profile, paths

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cross_run"
# What a test needs to score the answers again; the metrics are computed by the test, with today's code.
ANSWER_COLUMNS = ["set", "system", "uid", "product", "reference", "answer", "finish reason", "sources",
                  "retrieved uids"]


def write_run(name: str, answers, losses) -> Path:
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    answers[ANSWER_COLUMNS].to_csv(folder / "comparison_answers.csv", index=False)
    (folder / "training_losses.json").write_text(json.dumps({"losses": [round(loss, 4) for loss in losses]}) + "\n")
    return folder


def committed_run(name: str) -> Path:
    """The committed run's answers and losses, as `make course` left them under outputs/."""
    import pandas as pd

    answers = pd.read_csv(paths().tables / "comparison_answers.csv", dtype={"uid": str}, keep_default_na=False)
    losses = json.loads((paths().tables / "training_losses_cpu.json").read_text())["losses"]
    return write_run(name, answers, losses)


def retrained_run(name: str, training_seed: int) -> Path:
    profile = cpu_profile()
    model, tokenizer = training.adapter.load_base_model(profile)
    model = training.adapter.add_lora(model, replace(profile, seed=training_seed))
    train, _ = data.load_processed(profile)
    examples = training.records.training_examples(data.select_training_records(train, profile), train, profile,
                                          tokenizer.eos_token)
    trainer = training.trainer.build_trainer(model, tokenizer, examples.dataset, profile, seed=training_seed,
                                     data_seed=training_seed)
    stats = training.statistics.train_with_stats(trainer, kinds=examples.kinds)
    adapter = training.adapter.save_adapter(model, tokenizer, profile, target=paths().adapters / f"cpu-seed-{training_seed}")
    store = retrieval.ensure_index(profile, progress=False)
    comparison = evaluation.run_comparison(profile, store, evaluation.evaluation_sets(profile), adapter_dir=adapter,
                                           save=False)
    return write_run(name, comparison.answers, stats.losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--committed", action="store_true", help="copy the committed run's answers and losses")
    choice.add_argument("--training-seed", type=int, help="train again with this seed and answer with it")
    parser.add_argument("--name", help="the fixture folder (default: committed, or seed-<seed>)")
    arguments = parser.parse_args()
    if arguments.committed:
        folder = committed_run(arguments.name or "committed")
    else:
        folder = retrained_run(arguments.name or f"seed-{arguments.training_seed}", arguments.training_seed)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
