"""LoRA + SFTTrainer + statistics + loss curve.

Notebook 03 writes the Unsloth and TRL calls out in full, as Unsloth's own notebooks do; the functions here make the
same calls for ``ensure_adapter`` (notebooks 05 and 06 need an adapter even when 03 was not run) and for the tests,
and measure what the reference only eyeballed or measured wrongly.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.config import DEMO_PRODUCTS, Profile, active_profile, paths
from helpers.data import load_processed, shown_figure
from helpers.models import FastLanguageModel, display_path, unsloth_quiet
from helpers.prompts import format_training_text
from helpers.quiet import progress, quiet_libraries

import datasets  # noqa: E402  (after helpers.models: Unsloth must be imported first)
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

# The reference's run on an RTX 4060, from its own training log (its text claimed 2:30 h).
REFERENCE_TRAINING_SECONDS = 49_274.93
REFERENCE_SAMPLES_PER_SECOND = 0.203
# Unsloth's CPU backend patches gradient checkpointing; "unsloth" is what its notebooks pass.
GRADIENT_CHECKPOINTING = "unsloth"
MEMORY_SAMPLING_SECONDS = 0.05
PRECISION_COMPARISON_STEPS = 4


# --- Data ------------------------------------------------------------------------------------------------------


def select_training_records(train: datasets.Dataset, profile: Profile) -> datasets.Dataset:
    """profile.train_examples records: the four demo products, then a seeded shuffle of the rest."""
    demo = train.filter(lambda record: record["product"] in DEMO_PRODUCTS)
    missing = set(DEMO_PRODUCTS) - set(demo["product"])
    if missing:
        raise ValueError(f"The training split lacks the demo products {sorted(missing)}: rebuild outputs/processed.")
    demo = demo.select(range(len(DEMO_PRODUCTS))) if len(demo) > len(DEMO_PRODUCTS) else demo
    others = train.filter(lambda record: record["product"] not in DEMO_PRODUCTS).shuffle(seed=profile.seed)
    wanted = profile.train_examples - len(demo)
    if wanted > len(others):
        raise ValueError(f"profile.train_examples={profile.train_examples} but only {len(others) + len(demo)} "
                         "training records exist.")
    return datasets.concatenate_datasets([demo, others.select(range(wanted))])


def to_training_texts(records: datasets.Dataset, eos_token: str) -> datasets.Dataset:
    """Alpaca text with EOS in a "text" column, the field SFTTrainer reads."""
    return records.map(
        lambda record: {"text": format_training_text(record["product"], record["description"], eos_token)}
    )


def training_dataset(profile: Profile, tokenizer) -> datasets.Dataset:
    train, _ = load_processed(profile)
    return to_training_texts(select_training_records(train, profile), tokenizer.eos_token)


# --- Model and trainer (the same calls notebook 03 shows) -----------------------------------------------------


def load_base_model(profile: Profile, load_in_4bit: bool | None = None):
    with unsloth_quiet():
        return FastLanguageModel.from_pretrained(
            profile.model_name,
            max_seq_length=profile.max_seq_length,
            load_in_4bit=profile.load_in_4bit if load_in_4bit is None else load_in_4bit,
        )


def add_lora(model, profile: Profile):
    with unsloth_quiet():
        return FastLanguageModel.get_peft_model(
            model,
            r=profile.lora_r,
            target_modules=list(profile.lora_targets),
            lora_alpha=profile.lora_alpha,
            lora_dropout=profile.lora_dropout,
            bias="none",
            use_gradient_checkpointing=GRADIENT_CHECKPOINTING,
            random_state=profile.seed,
        )


def trainer_output_dir(profile: Profile) -> Path:
    # Beside the adapters (ignored by git); save_strategy="no" keeps it nearly empty.
    return paths().adapters / f"{profile.name}-trainer"


def sft_settings(profile: Profile) -> dict:
    """The profile's SFTConfig arguments, as a plain dict (building a second SFTConfig resets Accelerate's state)."""
    return dict(
        output_dir=str(trainer_output_dir(profile)),
        dataset_text_field="text",
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


def sft_config(profile: Profile, **overrides) -> SFTConfig:
    """The profile's SFTConfig; overrides are for benchmarks and tests (max_steps, padding, sampling)."""
    return SFTConfig(**{**sft_settings(profile), **overrides})


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


def build_trainer(model, tokenizer, dataset: datasets.Dataset, profile: Profile, **overrides) -> SFTTrainer:
    return SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                      args=sft_config(profile, **overrides))


# --- Statistics ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingStats:
    device: str
    steps: int
    samples: int
    tokens: int
    wall_seconds: float
    samples_per_second: float
    tokens_per_second: float
    first_loss: float
    last_loss: float
    mean_loss: float
    peak_memory_gb: float
    peak_memory_kind: str
    losses: tuple[float, ...]

    def table(self) -> pd.DataFrame:
        rows = {key: value for key, value in asdict(self).items() if key != "losses"}
        return pd.DataFrame({"value": rows}).rename_axis("training statistic")


class PeakMemorySampler:
    """Peak resident memory of this process while a block runs, sampled in a background thread.

    resource.getrusage's ru_maxrss cannot be reset, so it would report the peak of whatever ran before.
    """

    def __init__(self, interval: float = MEMORY_SAMPLING_SECONDS):
        self.interval = interval
        self.peak_bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemorySampler:
        self.peak_bytes = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


class StepProgress(TrainerCallback):
    """One course-style bar over the optimizer steps with the latest loss, instead of a printed dict per step."""

    def __init__(self, stream):
        self.stream = stream
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = progress(total=state.max_steps, desc="training", unit="step", file=self.stream,
                            bar_format="{l_bar}{bar:30}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def samples_seen(trainer: SFTTrainer) -> int:
    """Examples the optimizer saw: full batches, except that the last batch of an epoch may be short."""
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    samples = trainer.state.global_step * per_step
    if args.max_steps > 0:
        return samples
    return min(samples, round(len(trainer.train_dataset) * args.num_train_epochs))


def train_with_stats(trainer: SFTTrainer) -> TrainingStats:
    """trainer.train(), with wall time, throughput, losses and peak memory measured around it.

    Peak memory is torch.cuda.max_memory_reserved on a GPU (the reference printed "0.000 GB" by subtracting the
    wrong baseline), and process RSS on a CPU.
    """
    quiet_libraries()
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    # Unsloth prints a banner (GPU count, versions) when training starts; the course's own bar replaces it.
    trainer.add_callback(StepProgress(sys.stdout))
    with PeakMemorySampler() as memory:
        start = time.perf_counter()
        with unsloth_quiet():
            trainer.train()
        wall_seconds = time.perf_counter() - start
    history = trainer.state.log_history
    losses = tuple(float(entry["loss"]) for entry in history if "loss" in entry)
    if not losses:
        raise RuntimeError("Training logged no loss: set logging_steps so that at least one step is logged.")
    tokens = max((int(float(entry["num_tokens"])) for entry in history if "num_tokens" in entry), default=0)
    samples = samples_seen(trainer)
    if on_gpu:
        peak_memory_gb, kind = torch.cuda.max_memory_reserved() / 1e9, "torch.cuda.max_memory_reserved"
    else:
        peak_memory_gb, kind = memory.peak_bytes / 1e9, "process RSS"
    return TrainingStats(
        device=torch.cuda.get_device_name() if on_gpu else f"CPU ({torch.get_num_threads()} threads)",
        steps=trainer.state.global_step,
        samples=samples,
        tokens=tokens,
        wall_seconds=round(wall_seconds, 2),
        samples_per_second=round(samples / wall_seconds, 3),
        tokens_per_second=round(tokens / wall_seconds, 1),
        first_loss=round(losses[0], 4),
        last_loss=round(losses[-1], 4),
        mean_loss=round(sum(losses) / len(losses), 4),
        peak_memory_gb=round(peak_memory_gb, 3),
        peak_memory_kind=kind,
        losses=losses,
    )


def plot_loss_curve(stats: TrainingStats, profile: Profile) -> Figure:
    """Training loss per step, saved to outputs/figures/loss_curve_<profile>.png and returned for inline display."""
    figure = shown_figure()(figsize=(7, 3.5))
    axes = figure.subplots()
    steps = range(1, len(stats.losses) + 1)
    axes.plot(steps, stats.losses, marker="o", markersize=3)
    axes.set(xlabel="step", ylabel="training loss",
             title=f"LoRA fine-tuning of {profile.short_name} ({profile.name} profile)")
    axes.grid(alpha=0.3)
    paths().figures.mkdir(parents=True, exist_ok=True)
    figure.savefig(paths().figures / f"loss_curve_{profile.name}.png", dpi=120, bbox_inches="tight")
    return figure


# --- Saving and the adapter contract ---------------------------------------------------------------------------


def adapter_dir(profile: Profile) -> Path:
    return paths().adapters / profile.name


def save_adapter(model, tokenizer, profile: Profile, merged_16bit: bool = False, target: Path | None = None) -> Path:
    """The LoRA adapter (a few MB) under outputs/adapters/<profile>; optionally the merged 16-bit model beside it."""
    target = Path(target or adapter_dir(profile))
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    if merged_16bit:
        with unsloth_quiet():
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
    """outputs/adapters/<profile>, trained and saved first if it is missing."""
    profile = profile or active_profile(verbose=False)
    target = adapter_dir(profile)
    if (target / "adapter_config.json").is_file():
        return target
    print(f"no adapter in {display_path(target)}: training one ({profile.train_examples} examples)")
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


def measure_precision(profile: Profile, load_in_4bit: bool, steps: int) -> dict:
    """Train `steps` steps in this process and return samples/s and memory; run it in a fresh process."""
    model, tokenizer = load_base_model(profile, load_in_4bit=load_in_4bit)
    weights_gb = model.get_memory_footprint() / 1e9
    model = add_lora(model, profile)
    trainer = build_trainer(model, tokenizer, training_dataset(profile, tokenizer), profile, max_steps=steps)
    stats = train_with_stats(trainer)
    return {
        "precision": "4-bit QLoRA" if load_in_4bit else "16-bit LoRA",
        "samples/s": stats.samples_per_second,
        "tokens/s": stats.tokens_per_second,
        "weights in memory (GB)": round(weights_gb, 3),
        f"peak memory (GB, {stats.peak_memory_kind})": stats.peak_memory_gb,
        "steps": stats.steps,
        "loss first → last": f"{stats.first_loss:.3f} → {stats.last_loss:.3f}",
    }


def compare_precisions(profile: Profile, steps: int = PRECISION_COMPARISON_STEPS) -> pd.DataFrame:
    """4-bit QLoRA against 16-bit LoRA on this machine, each in its own process so that peak memory is its own."""
    rows = []
    for load_in_4bit in (True, False):
        command = [sys.executable, "-m", "helpers.training", "--measure-precision",
                   "4" if load_in_4bit else "16", "--steps", str(steps), "--profile", profile.name]
        result = subprocess.run(command, capture_output=True, text=True, cwd=paths().root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    table = pd.DataFrame(rows).set_index("precision")
    paths().tables.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths().tables / f"precision_comparison_{profile.name}.csv")
    return table


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

    parser = argparse.ArgumentParser(description="Train the LoRA adapter, or measure one precision.")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None)
    parser.add_argument("--measure-precision", choices=("4", "16"), default=None)
    parser.add_argument("--steps", type=int, default=PRECISION_COMPARISON_STEPS)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]() if args.profile else active_profile(verbose=False)
    if args.measure_precision:
        print(json.dumps(measure_precision(profile, args.measure_precision == "4", args.steps)))
    else:
        print(ensure_adapter(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
