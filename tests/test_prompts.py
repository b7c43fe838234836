import pytest

from helpers.config import ALPACA_INSTRUCTION
from helpers.prompts import Catalogue, format_prompt, format_training_text


def test_prompt_is_the_reference_alpaca_layout_up_to_the_response():
    prompt = format_prompt("Mog's Kittens")
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert f"### Instruction:\n{ALPACA_INSTRUCTION}\n\n### Input:\nMog's Kittens\n\n### Response:\n" in prompt
    assert prompt.endswith("### Response:\n")


def test_the_catalogues_record_goes_into_the_input_section_apart_from_the_other_products():
    catalogue = Catalogue("Product: The Prophet - Description: Gibran's poems.",
                          ("Product: The Book of Job - Description: A translation.",))
    input_section = format_prompt("The Prophet", catalogue).split("### Input:\n")[1].split("\n\n### Response:")[0]
    assert input_section == ("The Prophet\n\n"
                             "Catalogue record of this product:\nProduct: The Prophet - Description: Gibran's poems.\n\n"
                             "Other products (not this one):\nProduct: The Book of Job - Description: A translation.")


def test_without_a_record_the_prompt_says_so_and_shows_no_other_product():
    prompt = format_prompt("The Prophet", Catalogue(None, ("Product: The Book of Job - Description: x",)))
    assert "Catalogue record of this product: none. The catalogue does not hold this product." in prompt
    assert "The Book of Job" not in prompt


def test_without_retrieval_the_prompt_is_the_plain_one():
    assert "Catalogue" not in format_prompt("The Prophet")


def test_training_text_is_the_inference_prompt_plus_description_and_eos():
    text = format_training_text("The Prophet", " Poems on love and work. ", "<|im_end|>")
    assert text == format_prompt("The Prophet") + "Poems on love and work.<|im_end|>"


@pytest.mark.parametrize("product, description, eos", [("", "text", "<eos>"), ("Title", " ", "<eos>"),
                                                       ("Title", "text", "")])
def test_bad_input_is_refused_with_a_clear_error(product, description, eos):
    with pytest.raises(ValueError):
        format_training_text(product, description, eos)


def test_generated_text_keeps_what_precedes_a_self_written_response_marker():
    from helpers.prompts import cut_at_special_token

    generated = "Tutu for girls.\n\n### Response:\nG<|im_end|>"
    assert cut_at_special_token(generated) == "Tutu for girls.\n\n### Response:\nG"
