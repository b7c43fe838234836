"""The numbers of a training run: measured while it trains (time, peak memory, the tokens the model really saw,
the loss of each step and the kind of example its batch held), the loss curve, the LoRA's size and the run's cost.

Imports no Unsloth (a benchmark's plain baseline is measured by the same code).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import psutil
import torch
import trl
from matplotlib.figure import Figure
from transformers import TrainerCallback

from helpers.config import Profile, paths
from helpers.display import shown_figure
from helpers.quiet import progress
from helpers.training.records import EXAMPLE_KINDS

MEMORY_SAMPLING_SECONDS = 0.05
# The Trainer's own bars (text, and an HTML table in Jupyter) and its per-step log dict; the course's bar replaces them.
LIBRARY_PROGRESS_CALLBACKS = ("ProgressCallback", "NotebookProgressCallback", "PrinterCallback")
# The reference's run on an RTX 4060, from its own training log (its text claimed 2:30 h).
REFERENCE_TRAINING_SECONDS = 49_274.93
REFERENCE_SAMPLES_PER_SECOND = 0.203


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
    step_kinds: tuple[str, ...] = ()  # per step, the kinds of example its batch held (StepKinds)

    def table(self) -> pd.DataFrame:
        rows = {key: value for key, value in asdict(self).items() if key not in ("losses", "step_kinds")}
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

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The loss of a step is logged after its on_step_end: moving the bar here shows each step with its own loss.
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)
        self.bar.close()


def batch_tokens(batch, pad_token_id: int | None) -> torch.Tensor:
    """The real (non-padding) tokens of one batch, as a 0-d tensor on the batch's device (no GPU sync).

    The attention mask where there is one. Padding-free batches carry no mask: Unsloth's give each sequence's
    length (packed_seq_lengths); without either, every input id that is not the pad token counts.
    """
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].sum()
    if batch.get("packed_seq_lengths") is not None:
        return batch["packed_seq_lengths"].sum()
    input_ids = batch["input_ids"]
    if pad_token_id is None:
        return torch.tensor(input_ids.numel(), device=input_ids.device)
    return (input_ids != pad_token_id).sum()


class TokenCounter:
    """Counts the real tokens of every batch that reaches the model while the block runs.

    It wraps this trainer's training_step, which receives each micro-batch exactly once, in Unsloth's patched
    training loop as in transformers' own. Reading "num_tokens" from the log history instead, with a missing entry
    taken as 0, reported 0.0 tokens/s for both backends of benchmarks/gpu_training.py.
    """

    def __init__(self, trainer: trl.SFTTrainer, on_batch=None):
        self.trainer = trainer
        self.pad_token_id = getattr(trainer.data_collator, "pad_token_id", None)
        if self.pad_token_id is None:
            self.pad_token_id = getattr(getattr(trainer, "processing_class", None), "pad_token_id", None)
        self.batch_counts: list[torch.Tensor] = []
        self.on_batch = on_batch  # called with every micro-batch too (StepKinds)

    def __enter__(self) -> TokenCounter:
        self._own_attribute = self.trainer.__dict__.get("training_step")
        training_step = self.trainer.training_step

        def counting_training_step(model, inputs, *args, **kwargs):
            self.batch_counts.append(batch_tokens(inputs, self.pad_token_id).detach())
            if self.on_batch is not None:
                self.on_batch(inputs)
            return training_step(model, inputs, *args, **kwargs)

        self.trainer.training_step = counting_training_step
        return self

    def __exit__(self, *exc_info) -> None:
        if self._own_attribute is None:
            del self.trainer.training_step
        else:
            self.trainer.training_step = self._own_attribute

    @property
    def batches(self) -> int:
        return len(self.batch_counts)

    @property
    def tokens(self) -> int:
        if not self.batch_counts:
            raise RuntimeError("No batch reached the model, so there are no tokens to count: was the training "
                               "dataset empty, or max_steps 0?")
        return sum(int(count) for count in self.batch_counts)


def batch_sequences(batch, pad_token_id: int | None) -> list[tuple[int, ...]]:
    """The token ids of each example in a batch, padding removed (by the attention mask, or the packed lengths)."""
    input_ids = batch["input_ids"].detach().cpu()
    if batch.get("attention_mask") is not None:
        mask = batch["attention_mask"].detach().cpu().bool()
        return [tuple(row[keep].tolist()) for row, keep in zip(input_ids, mask)]
    if batch.get("packed_seq_lengths") is not None:
        return [tuple(part.tolist()) for part in torch.split(input_ids.reshape(-1),
                                                              batch["packed_seq_lengths"].reshape(-1).tolist())]
    return [tuple(token for token in row.tolist() if token != pad_token_id) for row in input_ids]


class StepKinds:
    """Which kinds of example each optimizer step trained on, read from the batches that reached the model: a
    step's loss depends on what its batch holds (with the record in the prompt the answer is cheap to predict)."""

    def __init__(self, trainer: trl.SFTTrainer, kinds: Sequence[str]):
        self.trainer = trainer
        self.kind_of = {tuple(row["input_ids"]): kind for row, kind in zip(trainer.train_dataset, kinds)}
        self.by_step: dict[int, set[str]] = {}

    def __call__(self, batch) -> None:
        pad_token_id = getattr(self.trainer.processing_class, "pad_token_id", None)
        kinds = {self.kind_of.get(sequence, "unknown") for sequence in batch_sequences(batch, pad_token_id)}
        self.by_step.setdefault(self.trainer.state.global_step, set()).update(kinds)

    def steps(self, count: int) -> tuple[str, ...]:
        """One label per optimizer step: its kinds, in EXAMPLE_KINDS order, joined by " + "."""
        return tuple(" + ".join(kind for kind in (*EXAMPLE_KINDS, "unknown") if kind in self.by_step.get(step, ()))
                     for step in range(count))


def samples_seen(trainer: trl.SFTTrainer) -> int:
    """Examples the optimizer saw: full batches, except that the last batch of an epoch may be short."""
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    samples = trainer.state.global_step * per_step
    if args.max_steps > 0:
        return samples
    return min(samples, round(len(trainer.train_dataset) * args.num_train_epochs))


def train_with_stats(trainer: trl.SFTTrainer, kinds: Sequence[str] | None = None) -> TrainingStats:
    """trainer.train(), with wall time, throughput, losses and peak memory measured around it; with ``kinds`` (one
    per training example, TrainingExamples.kinds), also which kinds each step trained on.

    Tokens are the non-padding tokens of the batches that reached the model (TokenCounter). Peak memory is
    torch.cuda.max_memory_reserved on a GPU (the reference printed "0.000 GB" by subtracting the wrong baseline),
    and process RSS on a CPU.
    """
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    # The course's bar replaces the Trainer's own bar and the log dict it prints per step (only these: warnings
    # and everything else the libraries print stay visible).
    for callback in list(trainer.callback_handler.callbacks):
        if type(callback).__name__ in LIBRARY_PROGRESS_CALLBACKS:
            trainer.remove_callback(callback)
    trainer.add_callback(StepProgress(sys.stdout))
    step_kinds = StepKinds(trainer, kinds) if kinds is not None else None
    with PeakMemorySampler() as memory, TokenCounter(trainer, on_batch=step_kinds) as counted:
        start = time.perf_counter()
        trainer.train()
        wall_seconds = time.perf_counter() - start
    history = trainer.state.log_history
    losses = tuple(float(entry["loss"]) for entry in history if "loss" in entry)
    if not losses:
        raise RuntimeError("Training logged no loss: set logging_steps so that at least one step is logged.")
    tokens = counted.tokens
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
        step_kinds=step_kinds.steps(len(losses)) if step_kinds else (),
    )


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
