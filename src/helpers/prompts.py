"""The reference solution's Alpaca prompt: one template for training, inference and RAG alike.

Training teaches the model to continue ``format_prompt(product)`` with the description and EOS; inference sends
the same prompt and keeps only what comes after it. With retrieval, the Input section also says what the catalogue
holds (``Catalogue``): the record of this product, shown apart from the other products retrieval returned beside
it, or that the catalogue has no record of it. The fine-tuned model learns all three layouts (helpers.training),
so it sees at inference the layout it was trained on.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from helpers.config import ALPACA_INSTRUCTION

ALPACA_TEMPLATE = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.

### Instruction:
{instruction}

### Input:
{input}

### Response:
{response}"""

# The special tokens of SmolLM2 (<|im_end|>, <|endoftext|>) and of Llama-3 (<|begin_of_text|>, <|end_of_text|>,
# <|eot_id|>) that a decode with special tokens, or a model echoing its prompt, leaves in the text.
SPECIAL_TOKEN_PATTERN = re.compile(r"<\|[a-z_]+\|>")
LEADING_SPECIAL_TOKENS = re.compile(r"^(?:\s*<\|[a-z_]+\|>)+")


RECORD_HEADING = "Catalogue record of this product:"
OTHERS_HEADING = "Other products (not this one):"
NO_RECORD = "Catalogue record of this product: none. The catalogue does not hold this product."
NO_RECORD_ANSWER = "{product}. The catalogue has no description of this product."


@dataclass(frozen=True)
class Catalogue:
    """What retrieval puts in a prompt: the description of the product's own record (None when the catalogue has
    none) and the other products it returned in document form (``document_text``), each cut to its length
    (``catalogue_for``)."""

    record: str | None
    others: tuple[str, ...] = ()


def format_input(product: str, catalogue: Catalogue | None = None) -> str:
    """The Input section: the product title, then what the catalogue holds when retrieval was asked."""
    product = product.strip()
    if not product:
        raise ValueError("format_prompt: the product title is empty.")
    if catalogue is None:
        return product
    if catalogue.record is None:
        return f"{product}\n\n{NO_RECORD}"
    text = f"{product}\n\n{RECORD_HEADING}\n{catalogue.record}"
    if catalogue.others:
        text += f"\n\n{OTHERS_HEADING}\n" + "\n".join(catalogue.others)
    return text


def format_prompt(product: str, catalogue: Catalogue | None = None) -> str:
    """Everything the model sees before it writes: the template up to and including "### Response:\\n"."""
    return ALPACA_TEMPLATE.format(
        instruction=ALPACA_INSTRUCTION, input=format_input(product, catalogue), response=""
    )


def catalogue_for(record: str | None, others: Sequence[str], max_words: int) -> tuple[Catalogue, int]:
    """The Catalogue of a prompt from the record's description and the other documents, each cut to ``max_words``
    words (visibly); and how many were cut."""
    if record is None:
        return Catalogue(None), 0
    shown = [shorten_document(" ".join(document.split()), max_words) for document in (record, *others)]
    texts, cut = [text for text, _ in shown], sum(was_cut for _, was_cut in shown)
    return Catalogue(texts[0], tuple(texts[1:])), cut


def no_record_answer(product: str) -> str:
    """What the fine-tune learns to answer when the catalogue has no record: the title's facts and nothing more."""
    return NO_RECORD_ANSWER.format(product=product.strip().rstrip("."))


DOCUMENT_TEMPLATE = "Product: {title} - Description: {description}"
DESCRIPTION_MARK = " - Description: "


def document_text(title: str, description: str) -> str:
    """One product as the index stores it and as the other products of a prompt show it."""
    return DOCUMENT_TEMPLATE.format(title=title, description=description)


def document_description(document: str) -> str:
    """The description part of a document_text: what a prompt shows under the product's own record heading (the
    title is the product's, already in the prompt, and an answer that copies the record must start at its text)."""
    if DESCRIPTION_MARK not in document:
        raise ValueError(f"not a course document (no {DESCRIPTION_MARK.strip()!r}): {document[:80]!r}")
    return document.split(DESCRIPTION_MARK, 1)[1]


def shorten_document(text: str, max_words: int) -> tuple[str, bool]:
    """``text`` cut to its first ``max_words`` words, with a visible " …" when it was cut, and whether it was."""
    words = text.split()
    if len(words) <= max_words:
        return text, False
    return " ".join(words[:max_words]) + " …", True


def format_completion(description: str, eos_token: str) -> str:
    """What the model learns to write after the prompt: the description, then EOS so that it learns to stop."""
    description = description.strip()
    if not description:
        raise ValueError("format_completion: the description is empty.")
    if not eos_token:
        raise ValueError("format_completion: an EOS token is required, or the model never learns to stop.")
    return description + eos_token


def format_training_text(product: str, description: str, eos_token: str) -> str:
    """One training example as a single text: the prompt, the description, then EOS."""
    try:
        return format_prompt(product) + format_completion(description, eos_token)
    except ValueError as error:
        raise ValueError(f"format_training_text: {error} (product {product!r})") from None


def cut_at_special_token(generated: str) -> str:
    """Newly generated text up to its first special token (EOS, padding), stripped.

    For text that holds no prompt: a model that writes its own "### Response:" must not lose what came before.
    """
    generated = LEADING_SPECIAL_TOKENS.sub("", generated)
    return SPECIAL_TOKEN_PATTERN.split(generated, maxsplit=1)[0].strip()
