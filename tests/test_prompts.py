import pytest

from helpers.config import ALPACA_INSTRUCTION
from helpers.prompts import extract_response, format_prompt, format_training_text


def test_prompt_is_the_reference_alpaca_layout_up_to_the_response():
    prompt = format_prompt("Mog's Kittens")
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert f"### Instruction:\n{ALPACA_INSTRUCTION}\n\n### Input:\nMog's Kittens\n\n### Response:\n" in prompt
    assert prompt.endswith("### Response:\n")


def test_context_goes_into_the_input_section_after_the_title():
    prompt = format_prompt("The Prophet", context="Product: The Prophet - Description: Gibran's poems.")
    input_section = prompt.split("### Input:\n")[1].split("### Response:")[0]
    assert input_section.startswith("The Prophet\n")
    assert "Gibran's poems." in input_section


def test_blank_context_gives_the_plain_prompt():
    assert format_prompt("The Prophet", context="  ") == format_prompt("The Prophet")


def test_training_text_is_the_inference_prompt_plus_description_and_eos():
    text = format_training_text("The Prophet", " Poems on love and work. ", "<|im_end|>")
    assert text == format_prompt("The Prophet") + "Poems on love and work.<|im_end|>"


@pytest.mark.parametrize("product, description, eos", [("", "text", "<eos>"), ("Title", " ", "<eos>"),
                                                       ("Title", "text", "")])
def test_bad_input_is_refused_with_a_clear_error(product, description, eos):
    with pytest.raises(ValueError):
        format_training_text(product, description, eos)


def test_extract_response_drops_the_echoed_prompt_and_the_end_of_text_token():
    # What the reference printed: prompt and answer decoded together, "<|end_of_text|>" at the end.
    decoded = "<|begin_of_text|>" + format_prompt("Mog's Kittens") + "A board book about Mog.<|end_of_text|>"
    assert extract_response(decoded) == "A board book about Mog."


def test_extract_response_cuts_at_the_first_special_token():
    assert extract_response("Ballet tutu for girls.<|im_end|><|endoftext|><|endoftext|>") == "Ballet tutu for girls."
    assert extract_response("<|im_start|> Poems.<|im_end|>\nmore") == "Poems."


def test_extract_response_keeps_an_answer_without_special_tokens_whole():
    assert extract_response("  It is a loop. It is a loop.\n") == "It is a loop. It is a loop."


def test_generated_text_keeps_what_precedes_a_self_written_response_marker():
    from helpers.prompts import cut_at_special_token

    generated = "Tutu for girls.\n\n### Response:\nG<|im_end|>"
    assert cut_at_special_token(generated) == "Tutu for girls.\n\n### Response:\nG"
