import dataclasses
import json
import time

import pytest
import torch

from helpers.config import DEMO_PRODUCTS, cpu_profile, gpu_profile

REFERENCE_TRAINABLE_PARAMETERS = 83_886_080  # printed by the reference for Llama-3-8B, r=32


def llama3_8b_config():
    from helpers.training.statistics import llama3_8b_config

    return llama3_8b_config()


def test_gpu_profile_reproduces_the_reference_lora_size_on_llama3_8b():
    from helpers.training.statistics import lora_parameter_count

    profile = gpu_profile()
    assert lora_parameter_count(llama3_8b_config(), profile.lora_r, profile.lora_targets) == \
        REFERENCE_TRAINABLE_PARAMETERS


def test_lora_count_formula_agrees_with_peft_on_an_empty_llama3_8b():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from helpers.training.statistics import count_trainable_parameters, lora_parameter_count

    profile = gpu_profile()
    with torch.device("meta"):  # shapes only, no memory
        model = LlamaForCausalLM(llama3_8b_config())
    peft_model = get_peft_model(model, LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha,
                                                  target_modules=list(profile.lora_targets)))
    assert count_trainable_parameters(peft_model) == REFERENCE_TRAINABLE_PARAMETERS
    assert lora_parameter_count(llama3_8b_config(), 16, profile.lora_targets) == REFERENCE_TRAINABLE_PARAMETERS // 2


def records(count):
    from datasets import Dataset

    rows = [{"uid": str(i), "product": f"Product {i}", "description": f"Description number {i}."}
            for i in range(count)]
    rows[count // 2]["product"] = DEMO_PRODUCTS[0]
    rows += [{"uid": f"d{i}", "product": title, "description": "A demo description."}
             for i, title in enumerate(DEMO_PRODUCTS[1:])]
    return Dataset.from_list(rows)


def test_training_selection_is_deterministic_sized_and_keeps_the_demo_products():
    from helpers.data import select_training_records

    profile = dataclasses.replace(cpu_profile(), train_examples=10)
    chosen = select_training_records(records(30), profile)
    assert len(chosen) == 10
    assert set(DEMO_PRODUCTS) <= set(chosen["product"])
    assert chosen["uid"] == select_training_records(records(30), profile)["uid"]
    other_seed = dataclasses.replace(profile, seed=1)
    assert chosen["uid"] != select_training_records(records(30), other_seed)["uid"]


def test_asking_for_more_examples_than_exist_is_an_error():
    from helpers.data import select_training_records

    with pytest.raises(ValueError, match="train_examples"):
        select_training_records(records(5), dataclasses.replace(cpu_profile(), train_examples=50))


def test_training_texts_end_with_eos():
    from helpers.prompts import format_prompt
    from helpers.training.records import to_training_texts

    texts = to_training_texts(records(3), "<|im_end|>")["text"]
    assert texts[0] == format_prompt("Product 0") + "Description number 0.<|im_end|>"
    assert all(text.endswith("<|im_end|>") for text in texts)


def catalogue(count):
    """Products in three look-alike families, so that nearest neighbours are meaningful."""
    from datasets import Dataset

    families = ("Girls Ballet Tutu", "Stainless Steel Tea Kettle", "Jazz Album on Audio CD")
    rows = [{"uid": f"u{i}", "product": f"{families[i % 3]} Model {i}",
             "description": f"{families[i % 3]} model {i}, with {i + 2} parts. " + "Fine details. " * (i % 4)}
            for i in range(count)]
    return Dataset.from_list(rows)


def test_training_examples_are_prompt_and_completion_with_eos():
    from helpers.prompts import format_prompt
    from helpers.training.records import TITLE_ONLY, training_examples

    profile = dataclasses.replace(cpu_profile(), record_share=0.0, no_record_share=0.0)
    examples = training_examples(catalogue(6), catalogue(6), profile, "<|im_end|>")
    assert examples.dataset.column_names == ["prompt", "completion"]
    assert examples.dataset[0]["prompt"] == format_prompt("Girls Ballet Tutu Model 0")
    assert examples.dataset[0]["completion"] == "Girls Ballet Tutu model 0, with 2 parts.<|im_end|>"
    assert examples.kinds == (TITLE_ONLY,) * 6


def test_examples_with_a_record_show_it_apart_from_the_nearest_other_products():
    from helpers.prompts import OTHERS_HEADING, RECORD_HEADING, document_text
    from helpers.training.records import WITH_RECORD, training_examples

    profile = dataclasses.replace(cpu_profile(), record_share=0.5, no_record_share=0.0, retriever_k=3,
                                  context_words=200)
    pool = catalogue(12)
    examples = training_examples(pool, pool, profile, "<|im_end|>")
    assert examples.count(WITH_RECORD) == 6 and examples.shortened_documents == 0
    for row, kind in enumerate(examples.kinds):
        record, prompt = pool[row], examples.dataset[row]["prompt"]
        if kind != WITH_RECORD:
            assert RECORD_HEADING not in prompt
            continue
        shown_record = prompt.split(f"{RECORD_HEADING}\n", 1)[1].split("\n\n", 1)[0]
        others = prompt.split(f"{OTHERS_HEADING}\n", 1)[1].split("\n\n### Response:")[0].splitlines()
        # The record is its description (the answer to copy), the others whole documents with their titles.
        assert shown_record == record["description"].strip() and len(others) == 2
        assert document_text(record["product"], record["description"]).strip() not in others
        # The other products are of the same family: the look-alikes a retriever returns.
        family = record["product"].split(" Model")[0]
        assert all(line.startswith(f"Product: {family}") for line in others)
    assert examples.dataset["completion"] == [record["description"].strip() + "<|im_end|>" for record in pool]


def test_examples_without_a_record_answer_with_the_titles_facts_and_nothing_more():
    from helpers.prompts import NO_RECORD, no_record_answer
    from helpers.training.records import NO_RECORD as NO_RECORD_KIND, training_examples

    profile = dataclasses.replace(cpu_profile(), record_share=0.0, no_record_share=0.5)
    pool = catalogue(12)
    examples = training_examples(pool, pool, profile, "<|im_end|>")
    rows = [row for row, kind in enumerate(examples.kinds) if kind == NO_RECORD_KIND]
    assert len(rows) == 6
    for row in rows:
        assert NO_RECORD in examples.dataset[row]["prompt"]
        assert examples.dataset[row]["completion"] == no_record_answer(pool[row]["product"]) + "<|im_end|>"
    assert no_record_answer("Lumina Puzzle, 36 Pieces, Ages 4+") == (
        "Lumina Puzzle, 36 Pieces, Ages 4+. The catalogue has no description of this product.")


def test_only_records_shown_whole_are_trained_with_their_record():
    from helpers.training.records import WITH_RECORD, example_kinds, fits_context

    profile = dataclasses.replace(cpu_profile(), record_share=1.0, no_record_share=0.0, context_words=9)
    pool = catalogue(12)
    kinds = example_kinds(pool, profile)
    assert [kind == WITH_RECORD for kind in kinds] == [fits_context(record, profile) for record in pool]
    assert 0 < kinds.count(WITH_RECORD) < 12


def test_a_long_document_is_cut_visibly_and_counted():
    from helpers.prompts import catalogue_for

    catalogue_shown, cut = catalogue_for("one two three four five", ["short one"], max_words=3)
    assert catalogue_shown.record == "one two three …" and catalogue_shown.others == ("short one",) and cut == 1


def test_descriptions_too_long_to_train_on_whole_are_passed_over():
    from helpers.data import select_training_records, too_long_to_train

    data = records(30)
    rows = data.to_list()
    rows[5]["description"] = "word " * 500
    from datasets import Dataset

    data = Dataset.from_list(rows)
    profile = dataclasses.replace(cpu_profile(), train_examples=32)
    assert too_long_to_train(data, profile) == 1
    assert rows[5]["uid"] not in select_training_records(data, profile)["uid"]


def fake_stats(**changes):
    from helpers.training.statistics import TrainingStats

    values = dict(device="CPU", steps=30, samples=240, tokens=36000, wall_seconds=360.0, samples_per_second=0.667,
                  tokens_per_second=100.0, first_loss=3.2, last_loss=1.9, mean_loss=2.4, peak_memory_gb=1.5,
                  peak_memory_kind="process RSS", losses=(3.2, 1.9))
    values.update(changes)
    return TrainingStats(**values)


def test_cost_note_multiplies_hours_by_the_hourly_price():
    from helpers.training.statistics import cost_note

    note = cost_note(fake_stats(wall_seconds=1800.0), hourly_price=2.0)
    assert "0.500 h × 2.00 USD/h = 1.000 USD" in note
    assert "13.69 h × 2.00 USD/h = 27.37 USD" in note


def test_loss_curve_is_saved_and_returned(tmp_path, monkeypatch):
    from helpers import training

    monkeypatch.setattr(training.statistics, "paths", lambda: type("P", (), {"figures": tmp_path, "tables": tmp_path})())
    stats = dataclasses.replace(fake_stats(losses=(3.0, 2.5, 2.0, 1.0, 0.5)),
                                step_kinds=("title only", "with its record", "title only", "no record", "title only"))
    figure = training.statistics.plot_loss_curve(stats, cpu_profile())
    assert (tmp_path / "loss_curve_cpu.png").stat().st_size > 0
    axes = figure.axes[0]
    assert axes.get_xlabel() == "optimizer step" and "loss" in axes.get_ylabel()
    # One marker series per kind of batch, and the quarters' means drawn as lines.
    assert [collection.get_label() for collection in axes.collections[:3]] == ["title only", "with its record",
                                                                               "no record"]
    assert list(axes.collections[0].get_offsets()[:, 1]) == [3.0, 2.0, 0.5]
    saved = json.loads((tmp_path / "training_losses_cpu.json").read_text())
    assert saved["losses"] == [3.0, 2.5, 2.0, 1.0, 0.5] and saved["step_kinds"][1] == "with its record"


def test_quarter_means_and_the_loss_trend_compare_the_first_and_last_quarters():
    from helpers import training

    assert training.statistics.quarter_means([4, 4, 3, 3, 2, 2, 1, 1, 1]) == [4, 3, 2, 1]
    assert training.statistics.loss_trend(fake_stats(losses=(4, 4, 3, 3, 2, 2, 1, 1))) == "falling"
    assert training.statistics.loss_trend(fake_stats(losses=(1, 1, 3, 3, 2, 2, 4, 4))) == "NOT falling"


TINY = dataclasses.replace(cpu_profile(), name="tiny", train_examples=8, batch_size=4, max_seq_length=384,
                           lora_r=8, lora_alpha=16, learning_rate=2e-3, warmup_steps=0, max_new_tokens=10,
                           generation_batch_size=4, context_words=30)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers.models import FastLanguageModel
    from helpers.training.adapter import add_lora, load_base_model
    from helpers.training.trainer import build_trainer
    from helpers.training.statistics import train_with_stats
    from helpers.training.records import training_dataset

    model, tokenizer = load_base_model(TINY)
    model = add_lora(model, TINY)
    trainer = build_trainer(model, tokenizer, training_dataset(TINY, tokenizer), TINY,
                            output_dir=str(tmp_path_factory.mktemp("trainer")))
    started = time.perf_counter()
    stats = train_with_stats(trainer)
    outer_seconds = time.perf_counter() - started
    FastLanguageModel.for_inference(model)
    return model, tokenizer, stats, outer_seconds


@pytest.mark.slow
def test_training_statistics_are_measured(trained):
    from helpers.training.records import training_dataset

    _, tokenizer, stats, outer_seconds = trained
    assert stats.steps == 2 and stats.samples == 8 and len(stats.losses) == 2
    # Every real token of the 8 examples, counted from the batches; padding not counted, never a defaulted 0.
    dataset = training_dataset(TINY, tokenizer)
    lengths = [len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
               for prompt, completion in zip(dataset["prompt"], dataset["completion"])]
    assert max(lengths) <= TINY.max_seq_length and stats.tokens == sum(lengths)
    assert 0 < stats.wall_seconds <= outer_seconds + 0.005  # wall_seconds is rounded to hundredths
    assert stats.tokens_per_second > 0 and stats.samples_per_second > 0
    assert all(loss > 0 for loss in stats.losses)
    assert 0.2 < stats.peak_memory_gb < 24 and stats.peak_memory_kind == "process RSS"


@pytest.mark.slow
def test_the_loss_falls_on_the_completion_only(trained):
    from helpers.training.trainer import build_trainer
    from helpers.training.records import training_dataset

    model, tokenizer, _, _ = trained
    dataset = training_dataset(TINY, tokenizer)
    trainer = build_trainer(model, tokenizer, dataset, TINY, train_sampling_strategy="sequential")
    batch = next(iter(trainer.get_train_dataloader()))
    for row, (prompt, completion) in enumerate(zip(dataset["prompt"][:TINY.batch_size], dataset["completion"])):
        prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = batch["labels"][row]
        assert (labels[:prompt_length] == -100).all()  # no loss on the prompt
        supervised = labels[labels != -100].tolist()
        assert supervised[-1] == tokenizer.eos_token_id  # the EOS is learned
        assert tokenizer.decode(supervised).startswith(completion[:20])


@pytest.mark.slow
def test_lora_targets_all_seven_projections(trained):
    from helpers.training.statistics import count_trainable_parameters, lora_parameter_count

    model, _, _, _ = trained
    assert count_trainable_parameters(model) == lora_parameter_count(model.config, TINY.lora_r, TINY.lora_targets)


@pytest.mark.slow
def test_saved_adapter_reloads_to_the_same_answers(trained, tmp_path, capsys):
    from helpers.models import generate, load_model
    from helpers.prompts import format_prompt
    from helpers.training.adapter import save_adapter

    model, tokenizer, _, _ = trained
    prompts = [format_prompt(product) for product in DEMO_PRODUCTS]
    in_memory = generate(model, tokenizer, prompts, TINY, progress=False)
    save_adapter(model, tokenizer, TINY, target=tmp_path / "adapter")
    reloaded, reloaded_tokenizer = load_model(TINY, adapter_dir=tmp_path / "adapter")
    assert "LoRA adapter" in capsys.readouterr().out
    assert generate(reloaded, reloaded_tokenizer, prompts, TINY, progress=False) == in_memory
    trained_weights, reloaded_weights = lora_b_weights(model), lora_b_weights(reloaded)
    assert trained_weights.keys() == reloaded_weights.keys() and len(trained_weights) == 7 * 30
    assert all(torch.equal(trained_weights[name], reloaded_weights[name]) for name in trained_weights)
    # LoRA's B starts at zero: equal answers prove nothing unless training really moved it.
    assert any(weight.abs().max() > 0 for weight in trained_weights.values())


def lora_b_weights(model) -> dict:
    return {name.replace(".default", ""): parameter.detach().float()
            for name, parameter in model.named_parameters() if "lora_B" in name}


def test_a_hand_written_config_is_checked_against_the_profile():
    from trl import SFTConfig

    from helpers.training.trainer import settings_differing_from_profile, sft_settings

    profile = cpu_profile()
    assert settings_differing_from_profile(SFTConfig(**sft_settings(profile)), profile) == {}
    changed = SFTConfig(**{**sft_settings(profile), "learning_rate": 1.0})
    assert settings_differing_from_profile(changed, profile) == {"learning_rate": (1.0, profile.learning_rate)}


# --- The adapter contract: a fingerprint checked before reuse, an atomic save ---------------------------------


@pytest.fixture
def adapter_folder(tmp_path, monkeypatch):
    from helpers import training

    monkeypatch.setattr(training.adapter, "adapter_dir", lambda profile: tmp_path / profile.name)
    trained_profiles = []

    def fake_train(profile):
        target = tmp_path / profile.name
        target.mkdir(exist_ok=True)
        (target / "adapter_config.json").write_text("{}")
        (target / training.adapter.FINGERPRINT_FILE).write_text(json.dumps(training.adapter.adapter_fingerprint(profile)))
        trained_profiles.append(profile)
        return target, None

    monkeypatch.setattr(training.adapter, "train_adapter", fake_train)
    return trained_profiles


def test_an_adapter_is_reused_only_for_the_settings_it_was_trained_with(adapter_folder, capsys):
    from helpers.training.adapter import ensure_adapter

    profile = cpu_profile()
    ensure_adapter(profile)
    ensure_adapter(profile)
    assert len(adapter_folder) == 1, "the second call must reuse the adapter"
    ensure_adapter(dataclasses.replace(profile, lora_r=8))
    assert len(adapter_folder) == 2
    assert "trained with another lora;" in capsys.readouterr().out


def test_other_training_data_makes_the_adapter_stale(adapter_folder):
    from helpers.training.adapter import ensure_adapter

    ensure_adapter(cpu_profile())
    ensure_adapter(dataclasses.replace(cpu_profile(), seed=1))  # another selection of training records
    assert len(adapter_folder) == 2


def test_an_adapter_without_fingerprint_is_not_trusted(adapter_folder, tmp_path):
    from helpers.training.adapter import ensure_adapter

    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "adapter_config.json").write_text("{}")
    ensure_adapter(cpu_profile())
    assert len(adapter_folder) == 1


def test_another_gpu_model_changes_the_fingerprint(monkeypatch):
    from helpers.training.adapter import base_model_identity

    assert base_model_identity(gpu_profile().model_name) == {"hub_id": "unsloth/llama-3-8b-bnb-4bit"}
    monkeypatch.setenv("COURSE_GPU_MODEL", "unsloth/mistral-7b-bnb-4bit")
    assert base_model_identity(gpu_profile().model_name) == {"hub_id": "unsloth/mistral-7b-bnb-4bit"}


class BrokenSave:
    """A model whose save fails half-way, after writing one file."""

    def save_pretrained(self, folder):
        from pathlib import Path

        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")


def test_an_interrupted_save_keeps_the_previous_adapter(tmp_path):
    from helpers.training.adapter import save_adapter

    previous = tmp_path / "cpu"
    previous.mkdir()
    (previous / "adapter_config.json").write_text('{"previous": true}')
    with pytest.raises(OSError, match="disk full"):
        save_adapter(BrokenSave(), None, cpu_profile(), target=previous)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cpu"]
    assert (previous / "adapter_config.json").read_text() == '{"previous": true}'
