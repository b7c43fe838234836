"""LoRA + SFTTrainer + statistics + loss curve.

Notebook 03 writes the Unsloth and TRL calls out in full, as Unsloth's own notebooks do; the functions here make the
same calls for ``ensure_adapter`` (notebooks 05 and 06 need an adapter even when 03 was not run) and for the tests,
and measure what the reference only eyeballed or measured wrongly.

What needs no Unsloth (the training records, the SFTConfig, the statistics) lives in helpers.measurement, so that a
benchmark's plain baseline can use it without importing Unsloth; it is re-exported here under the same names.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from helpers.config import Profile, active_profile, embedding_model_name, paths
from helpers.display import shown_figure
from helpers.files import replace_folder
from helpers.config import display_path
from helpers.models import FastLanguageModel
from helpers.quiet import without_printed_noise

# After helpers.models: Unsloth must be imported before transformers, TRL and PEFT, which these import.
from helpers.measurement import (  # noqa: E402,F401  (re-exported: callers use helpers.training.<name>)
    PeakMemorySampler,
    StepProgress,
    TokenCounter,
    EXAMPLE_KINDS,
    NO_RECORD,
    TITLE_ONLY,
    WITH_RECORD,
    StepKinds,
    TrainingExamples,
    TrainingStats,
    batch_tokens,
    build_trainer,
    example_kinds,
    fits_context,
    samples_seen,
    select_training_records,
    sft_config,
    sft_settings,
    to_training_texts,
    too_long_to_train,
    train_with_stats,
    trainer_output_dir,
    training_dataset,
    training_examples,
)

from matplotlib.figure import Figure  # noqa: E402
from trl import SFTConfig  # noqa: E402

# The reference's run on an RTX 4060, from its own training log (its text claimed 2:30 h).
REFERENCE_TRAINING_SECONDS = 49_274.93
REFERENCE_SAMPLES_PER_SECOND = 0.203


# --- Model and trainer (the same calls notebook 03 shows) -----------------------------------------------------


def load_base_model(profile: Profile, load_in_4bit: bool | None = None):
    with without_printed_noise():
        return FastLanguageModel.from_pretrained(
            profile.model_name,
            max_seq_length=profile.max_seq_length,
            load_in_4bit=profile.load_in_4bit if load_in_4bit is None else load_in_4bit,
        )


def add_lora(model, profile: Profile):
    with without_printed_noise():
        return FastLanguageModel.get_peft_model(
            model,
            r=profile.lora_r,
            target_modules=list(profile.lora_targets),
            lora_alpha=profile.lora_alpha,
            lora_dropout=profile.lora_dropout,
            bias="none",
            use_gradient_checkpointing=profile.gradient_checkpointing,
            random_state=profile.seed,
        )


def settings_differing_from_profile(args: SFTConfig, profile: Profile) -> dict:
    """Settings of a hand-written SFTConfig that differ from sft_config(profile), which ensure_adapter uses."""
    actual = args.to_dict()
    return {key: (actual.get(key), value) for key, value in sft_settings(profile).items()
            if not same_setting(key, actual.get(key), value)}


def same_setting(key: str, actual, expected) -> bool:
    # TrainingArguments rewrites two of them: report_to="none" becomes [], adamw_torch becomes adamw_torch_fused.
    if key == "report_to":
        return actual in ([], [expected], expected)
    if key == "optim":
        return str(actual).startswith(str(expected))
    return actual == expected


# --- Statistics ------------------------------------------------------------------------------------------------


def quarter_means(losses: Sequence[float]) -> list[float]:
    """The mean loss of each quarter of the steps (the last quarter takes what does not divide evenly)."""
    quarter = max(1, len(losses) // 4)
    bounds = [0, quarter, 2 * quarter, 3 * quarter, len(losses)]
    return [sum(losses[start:end]) / (end - start) for start, end in zip(bounds, bounds[1:]) if end > start]


def plot_loss_curve(stats: TrainingStats, profile: Profile) -> Figure:
    """Training loss per step, one marker per kind of batch, and the mean of each quarter of the run; saved to
    outputs/figures/loss_curve_<profile>.png (its numbers to outputs/tables/training_losses_<profile>.json) and
    returned for inline display."""
    figure = shown_figure()(figsize=(8, 4))
    axes = figure.subplots()
    steps = list(range(1, len(stats.losses) + 1))
    kinds = stats.step_kinds or ("all examples",) * len(steps)
    for kind in dict.fromkeys(kinds):
        chosen = [index for index, step_kind in enumerate(kinds) if step_kind == kind]
        axes.scatter([steps[index] for index in chosen], [stats.losses[index] for index in chosen], s=14, label=kind)
    quarter = max(1, len(steps) // 4)
    for number, mean in enumerate(quarter_means(stats.losses)):
        end = len(steps) if number == 3 else (number + 1) * quarter
        axes.hlines(mean, number * quarter + 1, end, colors="black", linewidth=2,
                    label="mean of a quarter of the steps" if number == 0 else None)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss (answer tokens)")
    axes.set_title(f"LoRA fine-tuning of {profile.short_name} ({profile.name} profile)")
    axes.legend(fontsize=8, title="the step's batch held", title_fontsize=8)
    axes.grid(alpha=0.3)
    paths().figures.mkdir(parents=True, exist_ok=True)
    figure.savefig(paths().figures / f"loss_curve_{profile.name}.png", dpi=120, bbox_inches="tight")
    # The curve's numbers beside it: per-step losses are what two runs on two CPUs are compared by.
    paths().tables.mkdir(parents=True, exist_ok=True)
    (paths().tables / f"training_losses_{profile.name}.json").write_text(
        json.dumps({"losses": list(stats.losses), "step_kinds": list(stats.step_kinds)}) + "\n")
    return figure


def loss_trend(stats: TrainingStats) -> str:
    """Whether the loss fell: the mean of the last quarter of the steps against the first quarter's.

    One step's loss depends on which examples its batch holds (with retrieved context the answer stands in the
    prompt and is cheap to predict), so single steps are compared in quarters, not one against another.
    """
    quarters = quarter_means(stats.losses)
    return "falling" if quarters[-1] < quarters[0] else "NOT falling"


# --- Saving and the adapter contract ---------------------------------------------------------------------------


FINGERPRINT_FILE = "course_fingerprint.json"


def adapter_dir(profile: Profile) -> Path:
    return paths().adapters / profile.name


def base_model_identity(model_name: str) -> dict:
    """What identifies the base model on every machine: a hub id, or a local folder's name and config hash."""
    folder = Path(model_name)
    if not folder.is_dir():
        return {"hub_id": model_name}
    return {"folder": folder.name, "config_sha256": file_sha256(folder / "config.json")}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records_sha256(records) -> str:
    """A hash of the training records, in training order: another selection or a changed description changes it."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record["uid"], record["product"], record["description"]]).encode())
    return digest.hexdigest()


def adapter_fingerprint(profile: Profile) -> dict:
    """Everything that decides what the adapter learns: base model, quantization, LoRA, SFTConfig, prompt, data."""
    from helpers.data import load_processed
    from helpers import prompts

    train, _ = load_processed(profile)
    settings = {key: value for key, value in sft_settings(profile).items() if key != "output_dir"}
    return {
        "base_model": base_model_identity(profile.model_name),
        "load_in_4bit": profile.load_in_4bit,
        "max_seq_length": profile.max_seq_length,
        "lora": {"r": profile.lora_r, "alpha": profile.lora_alpha, "dropout": profile.lora_dropout,
                 "targets": list(profile.lora_targets)},
        "sft_config": settings,
        "prompt_template_sha256": hashlib.sha256("\n".join(
            (prompts.ALPACA_TEMPLATE, prompts.DOCUMENT_TEMPLATE, prompts.RECORD_HEADING, prompts.OTHERS_HEADING,
             prompts.NO_RECORD, prompts.NO_RECORD_ANSWER)).encode()).hexdigest(),
        "training_records_sha256": records_sha256(select_training_records(train, profile)),
        # The kinds of example, and for those with a record, who the other products are and how they are shown.
        "example_kinds": {"record_share": profile.record_share, "no_record_share": profile.no_record_share,
                          "k": profile.retriever_k, "context_words": profile.context_words,
                          "embedding_model": embedding_model_name(profile.embedding_model),
                          "pool_sha256": records_sha256(train)},
    }


def fingerprint_differences(saved: dict, wanted: dict) -> list[str]:
    """The top-level keys whose values differ: what changed since the adapter was trained."""
    return sorted(key for key in saved.keys() | wanted.keys() if saved.get(key) != wanted.get(key))


def stale_reason(target: Path, profile: Profile) -> str | None:
    """Why the adapter in ``target`` cannot serve ``profile`` (None when it can)."""
    if not (target / "adapter_config.json").is_file():
        return "no adapter"
    fingerprint_path = target / FINGERPRINT_FILE
    if not fingerprint_path.is_file():
        return f"no {FINGERPRINT_FILE} (saved by an older version of the course)"
    changed = fingerprint_differences(json.loads(fingerprint_path.read_text()), adapter_fingerprint(profile))
    return f"trained with another {', '.join(changed)}" if changed else None


def save_adapter(model, tokenizer, profile: Profile, merged_16bit: bool = False, target: Path | None = None) -> Path:
    """The LoRA adapter (a few MB) under outputs/adapters/<profile>, with its fingerprint; optionally the merged
    16-bit model beside it.

    Written atomically: into a temporary folder beside the target, fingerprint last, then swapped in. An
    interrupted save leaves the previous adapter (or nothing), never a half-written one that looks complete.
    """
    target = Path(target or adapter_dir(profile))
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / FINGERPRINT_FILE).write_text(json.dumps(adapter_fingerprint(profile), indent=1) + "\n")
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if merged_16bit:
        with without_printed_noise():
            model.save_pretrained_merged(str(target.with_name(f"{profile.name}-merged-16bit")), tokenizer,
                                         save_method="merged_16bit")
    print(f"saved LoRA adapter to {display_path(target)}")
    return target


def train_adapter(profile: Profile) -> tuple[Path, TrainingStats]:
    """The whole of notebook 03's training in one call: load, LoRA, SFTTrainer, measure, save."""
    model, tokenizer = load_base_model(profile)
    model = add_lora(model, profile)
    trainer = build_trainer(model, tokenizer, training_dataset(profile, tokenizer), profile)
    stats = train_with_stats(trainer)
    return save_adapter(model, tokenizer, profile), stats


def ensure_adapter(profile: Profile | None = None) -> Path:
    """outputs/adapters/<profile>, (re)trained first if it is missing or stale (another base model, LoRA or
    training settings, prompt or training data than the profile's)."""
    profile = profile or active_profile(verbose=False)
    target = adapter_dir(profile)
    reason = stale_reason(target, profile)
    if reason is None:
        return target
    print(f"{display_path(target)}: {reason}; training an adapter ({profile.train_examples} examples)")
    return train_adapter(profile)[0]


# --- LoRA size, precision comparison, cost ---------------------------------------------------------------------


def count_trainable_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


# Llama-3-8B's published dimensions: the gpu profile's LoRA size is checked without downloading 16 GB.
LLAMA3_8B_SIZES = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256)


def llama3_8b_config():
    from transformers import LlamaConfig

    return LlamaConfig(**LLAMA3_8B_SIZES)


def lora_parameter_count(config, r: int, targets: tuple[str, ...]) -> int:
    """LoRA parameters of a Llama-style config, from its dimensions alone: r × (in + out) per adapted matrix."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_dim = config.num_key_value_heads * head_dim
    q_dim = config.num_attention_heads * head_dim
    shapes = {
        "q_proj": (config.hidden_size, q_dim),
        "k_proj": (config.hidden_size, kv_dim),
        "v_proj": (config.hidden_size, kv_dim),
        "o_proj": (q_dim, config.hidden_size),
        "gate_proj": (config.hidden_size, config.intermediate_size),
        "up_proj": (config.hidden_size, config.intermediate_size),
        "down_proj": (config.intermediate_size, config.hidden_size),
    }
    unknown = set(targets) - set(shapes)
    if unknown:
        raise ValueError(f"Unknown LoRA target modules {sorted(unknown)}; known: {sorted(shapes)}.")
    per_layer = sum(r * sum(shapes[target]) for target in targets)
    return per_layer * config.num_hidden_layers


def cost_note(stats: TrainingStats, hourly_price: float, currency: str = "USD") -> str:
    """What this run cost at `hourly_price`, and what the reference's run would cost at the same price."""
    hours = stats.wall_seconds / 3600
    reference_hours = REFERENCE_TRAINING_SECONDS / 3600
    return (
        f"This run: {hours:.3f} h × {hourly_price:.2f} {currency}/h = {hours * hourly_price:.3f} {currency} "
        f"for {stats.samples} samples ({stats.samples_per_second:.2f} samples/s).\n"
        f"The reference: {reference_hours:.2f} h × {hourly_price:.2f} {currency}/h = "
        f"{reference_hours * hourly_price:.2f} {currency} for 10,000 samples "
        f"({REFERENCE_SAMPLES_PER_SECOND} samples/s on an 8 GB GPU that spilled to shared memory)."
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    from helpers.config import PROFILES

    parser = argparse.ArgumentParser(description="Train the LoRA adapter of a profile (unless a matching one exists).")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]() if args.profile else active_profile(verbose=False)
    print(ensure_adapter(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
