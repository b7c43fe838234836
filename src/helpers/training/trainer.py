"""The trainer's settings: the profile's SFTConfig and the SFTTrainer, the same for every backend.

Imports no Unsloth (a benchmark's plain baseline uses it). trl.SFTConfig and trl.SFTTrainer are looked up when
called, not bound on import: where Unsloth is loaded it replaces both in the trl module with its own, and a process
that imported this module first must still get those.
"""
from __future__ import annotations

from pathlib import Path

import datasets
import trl

from helpers.config import Profile, paths


def trainer_output_dir(profile: Profile) -> Path:
    # Beside the adapters (ignored by git); save_strategy="no" keeps it nearly empty.
    return paths().adapters / f"{profile.name}-trainer"


def sft_settings(profile: Profile) -> dict:
    """The profile's SFTConfig arguments, as a plain dict (building a second SFTConfig resets Accelerate's state)."""
    return dict(
        output_dir=str(trainer_output_dir(profile)),
        completion_only_loss=True,  # loss on the description and EOS, not on the prompt (prompt/completion data)
        max_length=profile.max_seq_length,
        packing=False,
        per_device_train_batch_size=profile.batch_size,
        gradient_accumulation_steps=profile.gradient_accumulation_steps,
        num_train_epochs=profile.epochs,
        learning_rate=profile.learning_rate,
        warmup_steps=profile.warmup_steps,
        weight_decay=profile.weight_decay,
        lr_scheduler_type=profile.lr_scheduler_type,
        optim=profile.optim,
        max_grad_norm=profile.max_grad_norm,
        train_sampling_strategy="group_by_length" if profile.group_by_length else "random",
        seed=profile.seed,
        data_seed=profile.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
    )


def sft_config(profile: Profile, **overrides) -> trl.SFTConfig:
    """The profile's SFTConfig; overrides are for benchmarks and tests (max_steps, padding, sampling)."""
    return trl.SFTConfig(**{**sft_settings(profile), **overrides})


def build_trainer(model, tokenizer, dataset: datasets.Dataset, profile: Profile, **overrides) -> trl.SFTTrainer:
    return trl.SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                          args=sft_config(profile, **overrides))


def settings_differing_from_profile(args: trl.SFTConfig, profile: Profile) -> dict:
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
