"""Load (Unsloth), generate, stream, batch: the one module that imports Unsloth.

Unsloth is imported here, before transformers, TRL and PEFT, because it patches them on import. Its banner and
its load line carry the machine's thread count: those two named lines are dropped (helpers.quiet), everything else
it prints stays, and ``load_model`` prints one line of its own.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers.config import Profile, active_profile, display_path, prepare_environment
from helpers.prompts import cut_at_special_token, format_prompt
from helpers.quiet import progress as progress_bar
from helpers.quiet import silence_known_noise_in_notebooks, silence_logged_noise, without_printed_noise

# Before torch is imported, so that a script or test that never asked for a profile computes as the notebooks do.
prepare_environment(active_profile(verbose=False))
silence_logged_noise()  # before bitsandbytes is imported: its named message is logged on import
with without_printed_noise():
    # First, so that Unsloth patches transformers, TRL and PEFT before anything imports them.
    from unsloth import FastLanguageModel
silence_known_noise_in_notebooks()


def keep_bitsandbytes_on_float32() -> None:
    """On the pinned float32 CPU path, the same 4-bit kernels on every x86 CPU.

    Where its own CPUID check finds AVX512-BF16, bitsandbytes repacks a Linear4bit layer at its first inference
    call and from then on multiplies in bfloat16 (it casts the activations and absmax), whatever dtype the course
    asked for. Its check reads the CPU, not ATEN_CPU_CAPABILITY, so the course's pins do not reach it: layers built
    while UNSLOTH_CPU_BF16=0 is in force are told the CPU has no such kernel, and dequantize to float32 as on an
    AVX2 laptop.
    """
    if os.environ.get("UNSLOTH_CPU_BF16") == "0":
        import bitsandbytes.nn.modules

        bitsandbytes.nn.modules.has_avx512bf16 = lambda: False


keep_bitsandbytes_on_float32()

import torch  # noqa: E402
from transformers import TextStreamer, set_seed  # noqa: E402

# The reference sampled with temperature 0.2; greedy decoding is the default so that outputs reproduce.
REFERENCE_TEMPERATURE = 0.2


def describe_model(model, profile: Profile, adapter_dir: Path | None = None) -> str:
    bits = "4-bit (bitsandbytes nf4)" if profile.load_in_4bit else "16-bit"
    adapter = f" + LoRA adapter {display_path(adapter_dir)}" if adapter_dir else ""
    return f"loaded {profile.short_name} · {bits} · {model.get_memory_footprint() / 1e9:.2f} GB of weights{adapter}"


def prepare_tokenizer_for_generation(tokenizer) -> None:
    """Left padding: in a batch every prompt must end right where its answer begins."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_model(profile: Profile, adapter_dir: Path | str | None = None, verbose: bool = True):
    """(model, tokenizer) through Unsloth's FastLanguageModel, in inference mode, with a saved LoRA adapter if given.

    The adapter is attached to the profile's base model rather than loaded by its own path: the base path saved in
    adapter_config.json is absolute and would break once the repository moves.
    """
    set_seed(profile.seed)
    with without_printed_noise():
        model, tokenizer = FastLanguageModel.from_pretrained(
            profile.model_name, max_seq_length=profile.max_seq_length, load_in_4bit=profile.load_in_4bit
        )
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"No LoRA adapter in {adapter_dir}: adapter_config.json is missing.")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    FastLanguageModel.for_inference(model)
    prepare_tokenizer_for_generation(tokenizer)
    if verbose:
        print(describe_model(model, profile, adapter_dir))
    return model, tokenizer


def generation_arguments(tokenizer, profile: Profile, max_new_tokens: int | None, temperature: float | None) -> dict:
    arguments = dict(
        max_new_tokens=max_new_tokens or profile.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=profile.repetition_penalty,
        use_cache=True,
    )
    if temperature is None:
        arguments.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        arguments.update(do_sample=True, temperature=temperature)
    return arguments


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True)
class Answer:
    """One generated answer: the text, and whether the model ended it (EOS) or max_new_tokens did."""

    text: str
    stopped: bool
    new_tokens: int

    @property
    def finish_reason(self) -> str:
        """As the OpenAI API names it: "stop" when the model ended the answer, "length" when the limit did."""
        return "stop" if self.stopped else "length"


class PromptTooLongError(ValueError):
    """A prompt that, with max_new_tokens of answer, would not fit in the profile's max_seq_length."""


def check_prompt_lengths(lengths: list[int], max_new_tokens: int, profile: Profile) -> None:
    too_long = [length for length in lengths if length + max_new_tokens > profile.max_seq_length]
    if too_long:
        raise PromptTooLongError(
            f"{len(too_long)} of {len(lengths)} prompts do not fit: the longest has {max(too_long)} tokens, and with "
            f"max_new_tokens={max_new_tokens} that exceeds max_seq_length={profile.max_seq_length}. Shorten the "
            "context (profile.context_words) or raise max_seq_length."
        )


def order_by_length(lengths: list[int]) -> list[int]:
    """Prompt indices from shortest to longest: a batch of similar lengths wastes little on padding."""
    return sorted(range(len(lengths)), key=lambda index: (lengths[index], index))


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    profile: Profile,
    max_new_tokens: int | None = None,
    progress: bool = True,
    temperature: float | None = None,
    batch_size: int | None = None,
) -> list[Answer]:
    """The answers to many prompts, in the order given, generation_batch_size at a time, sorted by prompt length.

    Only the new text, stripped, without special tokens; with whether EOS ended it. A prompt that would not fit in
    max_seq_length with its answer is an error (PromptTooLongError), never a silent cut. Greedy unless a
    temperature is given (the reference used REFERENCE_TEMPERATURE); seeded either way.
    """
    if isinstance(prompts, str):
        raise TypeError("generate() takes a list of prompts; wrap a single prompt in a list.")
    prepare_tokenizer_for_generation(tokenizer)
    arguments = generation_arguments(tokenizer, profile, max_new_tokens, temperature)
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []
    check_prompt_lengths(lengths, arguments["max_new_tokens"], profile)
    size = batch_size or profile.generation_batch_size
    answers: list[Answer | None] = [None] * len(prompts)
    bar = progress_bar(total=len(prompts), desc="generating", unit="prompt", disable=not progress)
    for batch in batches(order_by_length(lengths), size):
        set_seed(profile.seed)
        encoded = tokenizer([prompts[index] for index in batch], return_tensors="pt", padding=True).to(model.device)
        output = model.generate(**encoded, **arguments)
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        for index, tokens, text in zip(batch, new_tokens, tokenizer.batch_decode(new_tokens)):
            eos_positions = (tokens == tokenizer.eos_token_id).nonzero()
            stopped = len(eos_positions) > 0
            written = int(eos_positions[0, 0]) + 1 if stopped else len(tokens)
            answers[index] = Answer(cut_at_special_token(text), stopped, written)
        bar.update(len(batch))
    bar.close()
    return answers


def answer_products(model, tokenizer, products: list[str], profile: Profile, **options) -> list[Answer]:
    """Each product's answer to the course's prompt (format_prompt), as generate_answers gives it."""
    return generate_answers(model, tokenizer, [format_prompt(product) for product in products], profile, **options)


def generate(model, tokenizer, prompts: list[str], profile: Profile, **options) -> list[str]:
    """The answer texts alone (generate_answers, which also says how each answer ended)."""
    return [answer.text for answer in generate_answers(model, tokenizer, prompts, profile, **options)]


@torch.inference_mode()
def stream(
    model,
    tokenizer,
    prompt: str,
    profile: Profile,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
) -> str:
    """Print the answer token by token as it is written (TextStreamer), and return it."""
    set_seed(profile.seed)
    encoded = tokenizer([prompt], return_tensors="pt").to(model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    output = model.generate(
        **encoded, streamer=streamer, **generation_arguments(tokenizer, profile, max_new_tokens, temperature)
    )
    return cut_at_special_token(tokenizer.decode(output[0, encoded["input_ids"].shape[1]:]))


def stream_text(model, tokenizer, prompt: str, profile: Profile, max_new_tokens: int | None = None) -> Iterator[str]:
    """The greedy answer to one prompt, yielded piece by piece as it is generated (TextIteratorStreamer)."""
    yield from TextStream(model, tokenizer, prompt, profile, max_new_tokens)


class _StopWhenAsked:
    """A stopping criterion that ends generation once ``event`` is set (a reader went away)."""

    def __init__(self, event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TextStream:
    """One greedy answer, iterated piece by piece while a thread generates it; ``answer`` once it is over.

    ``close()`` (also on leaving a ``with`` block or abandoning the iteration) stops the generation at its next token
    and waits for the thread, so a reader that goes away never leaves a generation running behind it.
    """

    def __init__(self, model, tokenizer, prompt: str, profile: Profile, max_new_tokens: int | None = None) -> None:
        from threading import Event, Thread

        from transformers import StoppingCriteriaList, TextIteratorStreamer

        set_seed(profile.seed)
        encoded = tokenizer([prompt], return_tensors="pt").to(model.device)
        self.prompt_tokens = int(encoded["input_ids"].shape[1])
        self._tokenizer = tokenizer
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._stop = Event()
        self._failures: list[BaseException] = []
        self._output = None
        self.answer: Answer | None = None
        arguments = generation_arguments(tokenizer, profile, max_new_tokens, temperature=None)
        arguments["stopping_criteria"] = StoppingCriteriaList([_StopWhenAsked(self._stop)])

        @torch.inference_mode()
        def run() -> None:
            try:
                self._output = model.generate(**encoded, **arguments, streamer=self._streamer)
            except BaseException as error:  # handed to the reader, instead of leaving it waiting forever
                self._failures.append(error)
                self._streamer.end()

        self._thread = Thread(target=run, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        try:
            yield from (text for text in self._streamer if text)
        finally:
            self.close()
        if self._failures:
            raise self._failures[0]
        self.answer = self._final_answer()

    def _final_answer(self) -> Answer:
        tokens = self._output[0, self.prompt_tokens:]
        eos_positions = (tokens == self._tokenizer.eos_token_id).nonzero()
        stopped = len(eos_positions) > 0
        written = int(eos_positions[0, 0]) + 1 if stopped else len(tokens)
        return Answer(cut_at_special_token(self._tokenizer.decode(tokens)), stopped, written)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def stream_answers(model, tokenizer, products: list[str], profile: Profile) -> list[str]:
    """Each product's answer streamed under its title, as the reference showed its TextStreamer output."""
    answers = []
    for product in products:
        print(f"\n▶ {product}")
        answers.append(stream(model, tokenizer, format_prompt(product), profile))
    return answers
