"""The metrics mean what the comparison says they mean, and the verdict follows the numbers."""
import pandas as pd
import pytest

from helpers import config, evaluation

LOOP = "It is also very easy to put on and it is very easy to take off. " * 4
REFERENCE = "Written by Judith Kerr in 1970. Mog has 3 kittens and lives in London."


@pytest.fixture(scope="module")
def embedding_model():
    return config.cpu_profile().embedding_model


def test_rouge_l_is_one_for_identical_and_zero_for_disjoint_texts():
    assert evaluation.rouge_l("a neon pink ballet tutu", "a neon pink ballet tutu") == 1.0
    assert evaluation.rouge_l("stainless chef knife", "a neon pink ballet tutu") == 0.0
    assert 0 < evaluation.rouge_l("a pink tutu for girls", "a neon pink ballet tutu") < 1


def test_facts_are_numbers_and_names_that_do_not_open_a_sentence():
    # "Written" and "Mog" open their sentences: capitalised by grammar, not by being names.
    assert evaluation.facts(REFERENCE) == {"judith", "kerr", "1970", "3", "london"}


def test_fact_score_is_the_share_of_reference_facts_in_the_answer():
    answer = "A story by judith Kerr's about 3 cats."
    assert evaluation.fact_score(answer, REFERENCE) == pytest.approx(3 / 5)
    assert evaluation.fact_score("A lovely book for children.", REFERENCE) == 0.0
    assert evaluation.fact_score("anything", "a reference without any number or name.") is None


def test_repetition_rate_separates_a_loop_from_fresh_text():
    assert evaluation.repetition_rate(LOOP) > 0.6
    assert evaluation.repetition_rate("A bright pink tulle tutu for girls who love ballet.") == 0.0
    assert evaluation.repetition_rate("too short") == 0.0


def test_embedding_cosine_ranks_meaning_not_wording(embedding_model):
    reference = "A bright pink tulle tutu for girls who love ballet."
    same, related, unrelated = evaluation.embedding_cosine(
        [reference, "Pink ballet skirt for little dancers.", "Stainless steel chef knife, dishwasher safe."],
        [reference] * 3,
        embedding_model,
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert related > unrelated


def test_embedding_cosine_needs_one_reference_per_answer(embedding_model):
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        evaluation.embedding_cosine(["a", "b"], ["a"], embedding_model)


def _scored(rouge_by_system: dict[str, float]) -> pd.DataFrame:
    """A hand-made scored answer table: every set, every system, two products, chosen ROUGE-L values."""
    rows = []
    for set_name in evaluation.SETS:
        for system in evaluation.SYSTEMS:
            for index, product in enumerate(config.DEMO_PRODUCTS[:2]):
                rows.append({
                    "set": set_name, "system": system, "uid": f"U{index}", "product": product,
                    "reference": f"reference of {product}", "answer": f"{system} about {product}", "sources": "",
                    "latency s": 1.0 + evaluation.SYSTEMS.index(system), "ROUGE-L": rouge_by_system[system],
                    "cosine": 0.5, "fact score": None if index else 0.25, "repetition": 0.1,
                })
    return pd.DataFrame(rows)


def test_metrics_table_averages_per_set_and_system_in_course_order():
    table = evaluation.metrics_table(_scored(dict(zip(evaluation.SYSTEMS, (0.1, 0.2, 0.3, 0.4)))))
    assert list(table.index) == [(s, m) for s in evaluation.SETS for m in evaluation.SYSTEMS]
    assert table.loc[("held-out", "RAG (base)"), "ROUGE-L"] == pytest.approx(0.3)
    # A product without facts is left out of the fact-score mean, not counted as zero.
    assert table.loc[("demo", "foundation"), "fact score"] == pytest.approx(0.25)
    assert (table["products"] == 2).all()


@pytest.mark.parametrize("leader", evaluation.SYSTEMS)
def test_conclusion_names_the_system_with_the_best_numbers(leader):
    rouge = {system: (0.5 if system == leader else 0.1) for system in evaluation.SYSTEMS}
    lines = evaluation.conclusions(evaluation.metrics_table(_scored(rouge)))
    held_out = lines[lines.index("held-out products:") + 1 :]
    assert held_out[0].startswith(f"  ROUGE-L     best: {leader} 0.500")
    # Latency depends on the machine's load, so the verdict on quality never mentions it.
    assert not any("latency" in line for line in lines)
    # ROUGE-L is the only metric that differs, so the leader takes it and ties share the other three.
    assert held_out[-1] == f"  => most quality wins (4 of 4): {leader}"


def test_conclusion_reports_what_fine_tuning_changes():
    rouge = dict(zip(evaluation.SYSTEMS, (0.1, 0.3, 0.1, 0.3)))
    lines = evaluation.conclusions(evaluation.metrics_table(_scored(rouge)))
    fine_tuning = next(line for line in lines if "fine-tuning, without retrieval" in line)
    retrieval = next(line for line in lines if "retrieval, on the base model" in line)
    assert "ROUGE-L +0.200 (better)" in fine_tuning
    assert "ROUGE-L +0.000 (same)" in retrieval


def test_demo_side_by_side_has_the_reference_and_one_column_per_system():
    table = evaluation.demo_side_by_side(_scored(dict.fromkeys(evaluation.SYSTEMS, 0.2)))
    assert list(table.columns) == ["reference", *evaluation.SYSTEMS]
    assert table.loc["Girls Ballet Tutu Neon Blue", "fine-tuned"] == "fine-tuned about Girls Ballet Tutu Neon Blue"
    assert table.loc["Mog's Kittens", "reference"] == "reference of Mog's Kittens"


def test_markdown_table_has_a_header_and_one_line_per_row():
    table = evaluation.metrics_table(_scored(dict.fromkeys(evaluation.SYSTEMS, 0.2)))
    lines = evaluation.markdown_table(table).splitlines()
    assert lines[0].startswith("| set | system | ROUGE-L")
    assert len(lines) == 2 + len(table)
    assert "| held-out | RAG (fine-tuned) | 0.200 |" in lines[-1]
