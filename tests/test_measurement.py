"""The measurement of a training run (helpers.training.statistics): Unsloth-free, and its token counts are the tokens the model really saw."""
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from helpers.config import local_smollm2_dir, paths

BENCHMARK = paths().root / "benchmarks" / "gpu_training.py"


def unsloth_modules_after(code: str) -> list[str]:
    """The unsloth* modules loaded once `code` has run in a fresh interpreter."""
    report = "import json, sys; print(json.dumps(sorted(name for name in sys.modules if name.startswith('unsloth'))))"
    script = f"{code}\n{report}"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=paths().root,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_check_sees_unsloth_where_the_course_loads_it():
    # The control: without it, the two checks below would also pass if they could not see Unsloth at all.
    assert "unsloth" in unsloth_modules_after("import helpers.models")


def test_the_training_records_trainer_and_statistics_import_no_unsloth():
    assert unsloth_modules_after("import helpers.training.records, helpers.training.trainer, "
                                 "helpers.training.statistics") == []


def test_the_plain_benchmark_backend_imports_no_unsloth():
    code = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("gpu_training", {str(BENCHMARK)!r})
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)
benchmark.plain_backend_imports()
benchmark.benchmark_profile({str(local_smollm2_dir())!r}, examples=8)
"""
    assert unsloth_modules_after(code) == []


def test_real_tokens_of_a_batch_leave_out_the_padding():
    from helpers.training.statistics import batch_tokens

    padded = {"input_ids": torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])}
    assert int(batch_tokens(padded, pad_token_id=0)) == 4
    # Unsloth's padding-free batches: one flattened row, no mask, the sequence lengths named.
    packed = {"input_ids": torch.tensor([[5, 6, 7, 2, 5, 2, 0, 0]]), "packed_seq_lengths": torch.tensor([4, 2])}
    assert int(batch_tokens(packed, pad_token_id=0)) == 6
    assert int(batch_tokens({"input_ids": torch.tensor([[5, 6, 0]])}, pad_token_id=0)) == 2


def test_a_run_in_which_no_batch_reached_the_model_raises_instead_of_reporting_zero_tokens():
    from helpers.training.statistics import TokenCounter

    trainer = SimpleNamespace(data_collator=SimpleNamespace(pad_token_id=0),
                              training_step=lambda model, inputs, num_items_in_batch=None: None)
    with TokenCounter(trainer) as counted:
        pass
    with pytest.raises(RuntimeError, match="No batch reached the model"):
        counted.tokens
    with TokenCounter(trainer) as counted:
        trainer.training_step(None, {"input_ids": torch.tensor([[5, 6, 0]]),
                                     "attention_mask": torch.tensor([[1, 1, 0]])})
    assert counted.batches == 1 and counted.tokens == 2


def test_tokens_are_the_real_tokens_of_every_batch_the_model_saw(tmp_path):
    """A tiny random Llama on the CPU, no Unsloth: 4 texts, batches of 2, one epoch, so 2 steps see every text once.

    A plain transformers Trainer: TRL 1.15's SFTTrainer computes its loss with a Triton kernel, absent on a CPU.
    """
    from datasets import Dataset
    from transformers import (AutoTokenizer, DataCollatorForLanguageModeling, LlamaConfig, LlamaForCausalLM,
                              Trainer, TrainingArguments)

    from helpers.training.statistics import train_with_stats

    tokenizer = AutoTokenizer.from_pretrained(local_smollm2_dir())
    texts = ["A short one.", "A somewhat longer text about a book.",
             "Girls Ballet Tutu Neon Blue: a tutu for dancing, in a bright neon blue.",
             "Mog's Kittens: Mog the cat has kittens, and the family takes care of them all, one by one."]
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    # All lengths differ, so every batch of two is padded: counting padded positions would give more.
    assert len(set(lengths)) == len(texts)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id))
    dataset = Dataset.from_dict({"text": texts}).map(lambda row: tokenizer(row["text"]), remove_columns=["text"])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, num_train_epochs=1,
                             logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))

    started = time.perf_counter()
    stats = train_with_stats(trainer)
    outer_seconds = time.perf_counter() - started

    assert stats.steps == 2 and stats.samples == 4
    assert stats.tokens == sum(lengths)
    # A real rate: at least the tokens over the whole call's time, never a defaulted 0.
    assert stats.tokens_per_second >= round(stats.tokens / outer_seconds, 1) > 0
    assert "training_step" not in vars(trainer)  # the counter unwrapped itself
