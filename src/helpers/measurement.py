"""What measuring a training run needs, without Unsloth: the shared records and SFTConfig, and the statistics.

Importing Unsloth patches transformers, TRL and PEFT for the whole process, so a "plain" baseline that imported
it would measure Unsloth twice. Nothing here imports Unsloth, helpers.models or helpers.training (a test checks it
in a fresh process): benchmarks/gpu_training.py trains both backends with these same records, the same SFTConfig
and the same measurement. helpers.training re-exports every name, and imports Unsloth before this module, as
Unsloth requires; a process that wants Unsloth must import it (or helpers.models) before this module too.
"""
from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from helpers.config import Profile, active_profile, paths, prepare_environment
from helpers.data import fits_training, load_processed, select_training_records, too_long_to_train  # noqa: F401
from helpers.prompts import (Catalogue, catalogue_for, document_text, format_completion, format_prompt,
                             format_training_text, no_record_answer)
from helpers.quiet import progress

# Before torch is imported, as helpers.models does: a benchmark that imports only this module computes alike.
prepare_environment(active_profile(verbose=False))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import trl  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

MEMORY_SAMPLING_SECONDS = 0.05
# The Trainer's own bars (text, and an HTML table in Jupyter) and its per-step log dict; the course's bar replaces them.
LIBRARY_PROGRESS_CALLBACKS = ("ProgressCallback", "NotebookProgressCallback", "PrinterCallback")


# --- Training records ------------------------------------------------------------------------------------------


def to_training_texts(records: datasets.Dataset, eos_token: str) -> datasets.Dataset:
    """Alpaca text with EOS in a "text" column (the language-modelling form: loss on the prompt too)."""
    return records.map(
        lambda record: {"text": format_training_text(record["product"], record["description"], eos_token)}
    )


@cache
def load_embeddings(model_path: str):
    """all-MiniLM-L6-v2 through LangChain, normalised so that cosine = dot product; loaded once per process."""
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model_name=model_path,
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )


def embed(texts: list[str], embedding_model: str, batch_size: int, description: str | None = None) -> np.ndarray:
    """Normalised embeddings of many texts, a batch at a time, with one progress bar when described."""
    embeddings = load_embeddings(embedding_model)
    starts = range(0, len(texts), batch_size)
    if description:
        starts = progress(starts, total=len(starts), desc=description, unit="batch")
    return np.concatenate([np.asarray(embeddings.embed_documents(texts[start:start + batch_size]))
                           for start in starts]) if texts else np.zeros((0, 0))


def nearest_other_products(queries: datasets.Dataset, pool: datasets.Dataset, profile: Profile,
                           count: int) -> list[list[int]]:
    """For each query record, the pool indices of the ``count`` documents nearest its title, its own excluded.

    The same search the retriever of notebooks 04-06 makes (a title against "Product: … - Description: …"
    documents, cosine on all-MiniLM-L6-v2), done exactly in memory because the index is built after training.
    """
    documents = [document_text(record["product"], record["description"]) for record in pool]
    document_vectors = embed(documents, profile.embedding_model, profile.index_batch_size,
                             description="embedding the products")
    query_vectors = embed(list(queries["product"]), profile.embedding_model, profile.index_batch_size)
    scores = query_vectors @ document_vectors.T
    pool_uids = pool["uid"]
    for row, uid in enumerate(queries["uid"]):
        scores[row, [index for index, pool_uid in enumerate(pool_uids) if pool_uid == uid]] = -np.inf
    return [list(row[:count]) for row in np.argsort(-scores, axis=1, kind="stable")]


TITLE_ONLY, WITH_RECORD, NO_RECORD = "title only", "with its record", "no record"
EXAMPLE_KINDS = (TITLE_ONLY, WITH_RECORD, NO_RECORD)


@dataclass(frozen=True)
class TrainingExamples:
    """The prompt/completion pairs SFTTrainer trains on, the kind of each, and what went into them."""

    dataset: datasets.Dataset  # columns prompt, completion (what SFTTrainer reads)
    kinds: tuple[str, ...]  # the kind of each row (EXAMPLE_KINDS)
    shortened_documents: int

    def count(self, kind: str) -> int:
        return self.kinds.count(kind)

    def example(self, kind: str) -> str:
        """The first example of a kind, as the model sees it: the prompt, then the completion."""
        row = self.dataset[self.kinds.index(kind)]
        return row["prompt"] + row["completion"]

    def show_each_kind(self) -> None:
        """Print one example of each kind present, as the model sees it, under the kind's name."""
        for kind in EXAMPLE_KINDS:
            if self.count(kind):
                print(f"{'=' * 40} {kind} {'=' * 40}\n{self.example(kind)}\n")

    def summary(self) -> str:
        return (f"{len(self.dataset)} prompt/completion examples: {self.count(TITLE_ONLY)} with the title alone (the "
                f"reference's exercise), {self.count(WITH_RECORD)} with the product's catalogue record among other "
                f"products, {self.count(NO_RECORD)} where the catalogue has no record (answer: the title's facts and "
                f"nothing more); {self.shortened_documents} other products' documents shortened (marked …)")


def fits_context(record: dict, profile: Profile) -> bool:
    """Whether a record's description is shown whole in a prompt: the answer can then be learnt from the prompt."""
    return len(record["description"].split()) <= profile.context_words


def example_kinds(records: datasets.Dataset, profile: Profile) -> list[str]:
    """Each record's kind of example, seeded: profile.record_share of them (among those whose document fits the
    prompt whole) with the record, profile.no_record_share with none, the rest with the title alone."""
    rng = random.Random(profile.seed)
    rows = list(range(len(records)))
    fitting = [row for row in rows if fits_context(records[row], profile)]
    with_record = set(rng.sample(fitting, min(len(fitting), round(profile.record_share * len(records)))))
    rest = [row for row in rows if row not in with_record]
    no_record = set(rng.sample(rest, round(profile.no_record_share * len(records))))
    return [WITH_RECORD if row in with_record else NO_RECORD if row in no_record else TITLE_ONLY for row in rows]


def training_examples(records: datasets.Dataset, pool: datasets.Dataset, profile: Profile,
                      eos_token: str) -> TrainingExamples:
    """Prompt/completion pairs in TRL's form, so that the loss falls on the completion (answer + EOS) only.

    Three kinds (example_kinds), each in the layout the course asks at inference (helpers.prompts):
    - the title alone → the description: the reference's exercise (notebook 06's "fine-tuned" system);
    - the title with the product's catalogue record, shown apart from profile.retriever_k - 1 other products that
      retrieval would return beside it (found as the retriever finds them) → the description: the record's facts,
      not a neighbour's (retrieval-augmented fine-tuning with distractors, as in RAFT);
    - the title with the catalogue saying it has no record → the title's facts and nothing more
      (helpers.prompts.no_record_answer): what the model cannot know, it learns not to invent.
    """
    kinds = example_kinds(records, profile)
    with_record = [row for row, kind in enumerate(kinds) if kind == WITH_RECORD]
    neighbours = dict(zip(with_record, nearest_other_products(records.select(with_record), pool, profile,
                                                              profile.retriever_k - 1))) if with_record else {}
    prompts, completions, shortened = [], [], 0
    for row, (record, kind) in enumerate(zip(records, kinds)):
        catalogue, answer = None, record["description"]
        if kind == WITH_RECORD:
            others = [document_text(pool[int(other)]["product"], pool[int(other)]["description"])
                      for other in neighbours[row]]
            catalogue, cut = catalogue_for(record["description"], others, profile.context_words)
            shortened += cut
        elif kind == NO_RECORD:
            catalogue, answer = Catalogue(None), no_record_answer(record["product"])
        prompts.append(format_prompt(record["product"], catalogue))
        completions.append(format_completion(answer, eos_token))
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    return TrainingExamples(dataset, kinds=tuple(kinds), shortened_documents=shortened)


def training_dataset(profile: Profile, tokenizer) -> datasets.Dataset:
    train, _ = load_processed(profile)
    return training_examples(select_training_records(train, profile), train, profile, tokenizer.eos_token).dataset


# --- SFTConfig and trainer (the same for every backend) -------------------------------------------------------


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


# trl.SFTConfig and trl.SFTTrainer are looked up when called, not bound on import: where Unsloth is loaded it
# replaces both in the trl module with its own, and a process that imported this module first must still get those.


def sft_config(profile: Profile, **overrides) -> trl.SFTConfig:
    """The profile's SFTConfig; overrides are for benchmarks and tests (max_steps, padding, sampling)."""
    return trl.SFTConfig(**{**sft_settings(profile), **overrides})


def build_trainer(model, tokenizer, dataset: datasets.Dataset, profile: Profile, **overrides) -> trl.SFTTrainer:
    return trl.SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
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
