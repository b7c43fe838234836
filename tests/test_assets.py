"""Set-up promises: the GGUF is converted once, with the right special tokens."""
import json

from helpers import assets, config


def test_converted_model_is_a_plain_safetensors_folder():
    target = config.local_smollm2_dir()
    assert assets.is_converted(target)
    model_config = json.loads((target / "config.json").read_text())
    assert model_config["model_type"] == "llama"
    assert "quantization_config" not in model_config


def test_converted_tokenizer_ends_turns_with_im_end():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.local_smollm2_dir())
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_conversion_is_skipped_when_present(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a converted model must not be converted again")

    monkeypatch.setattr(assets, "gguf_path", fail)
    assert assets.convert_smollm2(config.local_smollm2_dir()) == config.local_smollm2_dir()
