import dataclasses

import pytest

from helpers.config import DEMO_PRODUCTS, cpu_profile
from helpers.prompts import format_prompt

NEW_TOKENS = 12
PROFILE = dataclasses.replace(cpu_profile(), max_new_tokens=NEW_TOKENS, generation_batch_size=4)
PROMPTS = [format_prompt(product) for product in DEMO_PRODUCTS]


def test_batches_split_in_order():
    from helpers.models import batches

    assert list(batches([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]


def test_a_single_prompt_string_is_refused():
    from helpers.models import generate

    with pytest.raises(TypeError):
        generate(None, None, "one prompt", PROFILE)


@pytest.mark.slow
def test_load_prints_one_line_and_no_unsloth_banner(capsys):
    from helpers.models import load_model

    load_model(PROFILE)
    printed = capsys.readouterr()
    assert printed.out.count("\n") == 1 and printed.out.startswith("loaded SmolLM2-135M-Instruct · 4-bit")
    assert "Unsloth" not in printed.out + printed.err


@pytest.mark.slow
def test_batched_greedy_answers_reproduce_and_differ_per_product(base_model):
    # The notebooks always generate in batches; a batch may differ from one-at-a-time answers (padding changes the
    # 4-bit arithmetic, as the README says), but the same batch must give the same answers every time.
    from helpers.models import generate

    model, tokenizer = base_model
    first = generate(model, tokenizer, PROMPTS, PROFILE, progress=False)
    again = generate(model, tokenizer, PROMPTS, PROFILE, progress=False)
    assert first == again
    assert len(set(first)) == len(PROMPTS)  # four different products, not four copies of one answer


@pytest.mark.slow
def test_answers_are_new_text_only(base_model):
    from helpers.models import generate

    model, tokenizer = base_model
    for answer in generate(model, tokenizer, PROMPTS[:2], PROFILE, progress=False):
        assert answer and answer == answer.strip()
        assert "GET THE DESCRIPTION" not in answer and "<|" not in answer


@pytest.mark.slow
def test_streamed_answer_is_printed_and_equals_the_batched_one(base_model, capsys):
    from helpers.models import generate, stream

    model, tokenizer = base_model
    streamed = stream(model, tokenizer, PROMPTS[1], PROFILE)
    assert streamed in capsys.readouterr().out
    assert streamed == generate(model, tokenizer, [PROMPTS[1]], PROFILE, progress=False)[0]


@pytest.mark.slow
def test_sampling_follows_the_temperature_and_the_seed(base_model):
    from helpers.models import generate

    model, tokenizer = base_model
    hot = dataclasses.replace(PROFILE, seed=1, max_new_tokens=24)
    greedy = generate(model, tokenizer, PROMPTS, hot, progress=False)
    sampled = generate(model, tokenizer, PROMPTS, hot, temperature=2.0, progress=False)
    assert sampled == generate(model, tokenizer, PROMPTS, hot, temperature=2.0, progress=False), "seeded"
    assert sampled != greedy, "a temperature of 2 must change the answers: the temperature was ignored"
    other_seed = generate(model, tokenizer, PROMPTS, dataclasses.replace(hot, seed=2), temperature=2.0, progress=False)
    assert other_seed != sampled


def test_a_loop_is_named_with_its_repeated_phrase():
    from helpers.evaluation import failure_modes

    answer = "It is very easy to put on and it is very easy to take off and it is very easy to put on and it is very easy"
    assert failure_modes("Girls Ballet Tutu Neon Blue", answer)[0] == 'loops ("it is very easy" ×4)'


def test_generic_answers_that_ignore_the_title_are_named():
    from helpers.evaluation import failure_modes

    modes = failure_modes("Mog's Kittens", "The product is a pair of socks.")
    assert modes == ['generic ("the product")', "never names the product"]


def test_a_good_answer_has_no_failure_mode():
    from helpers.evaluation import failure_modes

    assert failure_modes("Mog's Kittens", "Judith Kerr's board book about Mog the cat and her kittens.") == []


def test_echoed_sections_and_cut_off_answers_are_named():
    from helpers.evaluation import failure_modes

    modes = failure_modes("The Prophet", "The Prophet by Gibran.\n\n### Instruction:\nGET THE")
    assert "writes new prompt sections" in modes and "runs to max_new_tokens" in modes


def test_failure_counts_pool_loops_and_give_shares():
    from helpers.evaluation import failure_mode_counts

    counts = failure_mode_counts([{"product": "A b"}, {"product": "C d"}],
                                 ["x y z w x y z w x y z w.", "p q r s p q r s p q r s."])
    assert counts.loc["loops", "answers"] == 2 and counts.loc["loops", "share"] == "100%"


def test_the_failure_table_names_invented_and_contradicted_facts():
    """Notebook 03's table once said "none found" beside a tutu "made of recycled cardboard … fits ages 8-11"."""
    from helpers.evaluation import CONTRADICTS, INVENTS, failure_mode_counts, failure_mode_table

    tutu = {"uid": "0000031895", "product": "Girls Ballet Tutu Neon Blue",
            "description": "Dance tutu for girls ages 2-8 years."}
    answers = ["A neon blue tutu made of recycled cardboard, fits ages 8-11.", "A neon blue tutu for girls ages 2-8."]
    table = failure_mode_table([tutu, tutu], answers)
    assert table.loc[0, "failure modes"] == f"{CONTRADICTS}; {INVENTS}"
    assert table.loc[0, "facts"] == "right: color neon blue; contradicts: age 8-11; invents: material cardboard"
    assert table.loc[1, "failure modes"] == "none found"
    counts = failure_mode_counts([tutu, tutu], answers)
    assert counts.loc[INVENTS, "answers"] == 1 and counts.loc[CONTRADICTS, "share"] == "50%"
    unknown = failure_mode_table([{"uid": "NOT-IN-THE-SAMPLE", "product": "A b"}], ["A b."])
    assert unknown.loc[0, "facts"] == "no record to check"


def test_prompts_are_batched_by_length_and_answered_in_the_given_order():
    from helpers.models import order_by_length

    assert order_by_length([30, 10, 20, 10]) == [1, 3, 2, 0]


def test_a_prompt_that_would_not_fit_is_an_error_not_a_silent_cut():
    from helpers.models import PromptTooLongError, check_prompt_lengths

    check_prompt_lengths([PROFILE.max_seq_length - NEW_TOKENS], NEW_TOKENS, PROFILE)
    with pytest.raises(PromptTooLongError, match="1 of 2 prompts do not fit"):
        check_prompt_lengths([10, PROFILE.max_seq_length], NEW_TOKENS, PROFILE)


@pytest.mark.slow
def test_each_answer_says_whether_the_model_stopped(base_model):
    from helpers.models import generate, generate_answers

    model, tokenizer = base_model
    prompts = [format_prompt("Mog's Kittens"), "Say OK.<|im_end|>\n<|im_start|>assistant\n"] + PROMPTS[2:]
    answers = generate_answers(model, tokenizer, prompts, PROFILE, progress=False)
    # Sorted by length inside, returned in the order asked: the same texts as one call per prompt's batch.
    assert [answer.text for answer in answers] == generate(model, tokenizer, prompts, PROFILE, progress=False)
    for answer in answers:
        assert answer.finish_reason == ("stop" if answer.stopped else "length")
        assert answer.new_tokens <= NEW_TOKENS and (answer.stopped or answer.new_tokens == NEW_TOKENS)


def test_stopping_is_taken_from_eos_when_known():
    from helpers.evaluation import NO_STOP, failure_modes

    assert NO_STOP in failure_modes("The Prophet", "Poems by Gibran.", stopped=False)
    assert NO_STOP not in failure_modes("The Prophet", "Poems by Gibran, ages 3+", stopped=True)
    assert NO_STOP in failure_modes("The Prophet", "Poems by Gibran, ages 3+")  # the rule of thumb without it


def test_4bit_layers_multiply_in_float32_on_every_cpu():
    # bitsandbytes repacks a Linear4bit for a bfloat16 kernel at its first inference call where its own CPUID check
    # finds AVX512-BF16; on the course's float32 path (helpers.models.keep_bitsandbytes_on_float32) it must not.
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(256, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = layer.weight._quantize("cpu")
    layer.eval()
    inputs = torch.randn(1, 256)
    with torch.no_grad():
        outputs = layer(inputs)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    expected = inputs @ F.dequantize_4bit(layer.weight.data, layer.weight.quant_state).T
    assert outputs.dtype == torch.float32
    assert torch.allclose(outputs, expected, rtol=1e-6, atol=1e-6)  # a bfloat16 product is off by ~1e-2
