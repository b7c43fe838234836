"""The reference solution's Alpaca prompt: one template for training, inference and RAG alike.

Training teaches the model to continue ``format_prompt(product)`` with the description and EOS; inference sends
the same prompt and keeps only what comes after it; RAG sends the same prompt with retrieved context added to
the Input section, so the fine-tuned model sees the layout it was trained on.
"""
from __future__ import annotations

import re

from helpers.config import ALPACA_INSTRUCTION

ALPACA_TEMPLATE = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.

### Instruction:
{instruction}

### Input:
{input}

### Response:
{response}"""

RESPONSE_MARKER = "### Response:\n"
# The special tokens of SmolLM2 (<|im_end|>, <|endoftext|>) and of Llama-3 (<|begin_of_text|>, <|end_of_text|>,
# <|eot_id|>) that a decode with special tokens, or a model echoing its prompt, leaves in the text.
SPECIAL_TOKEN_PATTERN = re.compile(r"<\|[a-z_]+\|>")
LEADING_SPECIAL_TOKENS = re.compile(r"^(?:\s*<\|[a-z_]+\|>)+")


def format_input(product: str, context: str | None = None) -> str:
    """The Input section: the product title, followed by retrieved context when RAG provides some."""
    product = product.strip()
    if not product:
        raise ValueError("format_prompt: the product title is empty.")
    if context is None or not context.strip():
        return product
    return f"{product}\n\nContext:\n{context.strip()}"


def format_prompt(product: str, context: str | None = None) -> str:
    """Everything the model sees before it writes: the template up to and including "### Response:\\n"."""
    return ALPACA_TEMPLATE.format(
        instruction=ALPACA_INSTRUCTION, input=format_input(product, context), response=""
    )


def document_text(title: str, description: str) -> str:
    """One product as the index stores it and as retrieved context shows it."""
    return f"Product: {title} - Description: {description}"


def shorten_document(text: str, max_words: int) -> tuple[str, bool]:
    """``text`` cut to its first ``max_words`` words, with a visible " …" when it was cut, and whether it was."""
    words = text.split()
    if len(words) <= max_words:
        return text, False
    return " ".join(words[:max_words]) + " …", True


def format_context(documents: list[str], max_words: int) -> tuple[str, int]:
    """Retrieved documents as the Context block, one per line, each cut to ``max_words`` words; and how many were cut.

    A few descriptions run to thousands of words: cut silently they would push the prompt past max_seq_length, so
    the cut is marked in the prompt and counted for the caller to report.
    """
    shortened = [shorten_document(" ".join(document.split()), max_words) for document in documents]
    return "\n".join(text for text, _ in shortened), sum(cut for _, cut in shortened)


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


def extract_response(text: str) -> str:
    """The answer alone: the text after the (echoed) prompt, up to the first special token such as EOS.

    The reference decoded prompt and answer together and printed "<|end_of_text|>" with every answer.
    """
    if RESPONSE_MARKER in text:
        text = text.split(RESPONSE_MARKER, 1)[1]
    return cut_at_special_token(text)


def cut_at_special_token(generated: str) -> str:
    """Newly generated text up to its first special token (EOS, padding), stripped.

    For text that holds no prompt: a model that writes its own "### Response:" must not lose what came before.
    """
    generated = LEADING_SPECIAL_TOKENS.sub("", generated)
    return SPECIAL_TOKEN_PATTERN.split(generated, maxsplit=1)[0].strip()
