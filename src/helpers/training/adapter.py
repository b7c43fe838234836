"""The adapter: Unsloth's 4-bit model with LoRA, trained by the profile's SFTTrainer, saved atomically with a
fingerprint of everything it was trained from, and retrained when that fingerprint no longer matches.

Notebook 03 writes the Unsloth and TRL calls out in full, as Unsloth's own notebooks do; ``ensure_adapter`` makes the
same calls for notebooks 05-07 (which need an adapter even when 03 was not run), the grader and the service.
``python -m helpers.training`` trains one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from helpers.config import Profile, active_profile, display_path, embedding_model_name, paths
from helpers.data import select_training_records
from helpers.files import replace_folder
from helpers.models import FastLanguageModel  # first: Unsloth patches transformers, TRL and PEFT on import
from helpers.quiet import without_printed_noise
from helpers.training.records import training_dataset
from helpers.training.statistics import TrainingStats, train_with_stats
from helpers.training.trainer import build_trainer, sft_settings


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    from helpers.config import PROFILES

    parser = argparse.ArgumentParser(description="Train the LoRA adapter of a profile (unless a matching one exists).")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]() if args.profile else active_profile(verbose=False)
    print(ensure_adapter(profile))
    return 0
