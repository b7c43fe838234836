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


def format_training_text(product: str, description: str, eos_token: str) -> str:
    """One training example: the prompt, the description, then EOS so the model learns where to stop."""
    description = description.strip()
    if not description:
        raise ValueError(f"format_training_text: empty description for product {product!r}.")
    if not eos_token:
        raise ValueError("format_training_text: an EOS token is required, or the model never learns to stop.")
    return format_prompt(product) + description + eos_token


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
