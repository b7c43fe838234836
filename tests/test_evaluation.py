"""The metrics mean what the comparison says they mean, and the verdict follows the numbers."""
import numpy as np
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


def test_a_fact_counts_only_when_its_words_appear_whole():
    assert evaluation.fact_recall("A 32-page picture book by Judith Kerr, ages 3\u20137.",
                                  ("judith kerr", "ages 3-7", "32 pages")) == pytest.approx(2 / 3)
    assert evaluation.fact_recall("Ages 13-70", ("ages 3-7",)) == 0.0  # not inside other numbers
    assert np.isnan(evaluation.fact_recall("anything", ()))


def test_a_number_in_neither_title_nor_reference_is_invented():
    title, reference = "Mog's Kittens, 24 Pieces", "A board book of 200,000 copies, first published in 1970."
    assert not evaluation.invents_numbers("24 pieces, 200000 copies since 1970.", title, reference)
    assert evaluation.invents_numbers("First published in 1971.", title, reference)
    assert not evaluation.invents_numbers("A lovely book.", title, reference)


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


def _scored(rouge_by_system: dict[str, float], products: int = 30, noise: float = 0.0) -> pd.DataFrame:
    """A hand-made scored answer table: every set and system, ``products`` products, chosen ROUGE-L values plus
    seeded noise of +-``noise`` per product (the same for every system of a product: a paired design)."""
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-noise, noise, size=products)
    rows = []
    for set_name in evaluation.SETS:
        for system in evaluation.SYSTEMS:
            for index in range(products):
                product = config.DEMO_PRODUCTS[index % 4] + f" {index}"
                rows.append({
                    "set": set_name, "system": system, "uid": f"U{index}", "product": product,
                    "reference": f"reference of {product}", "answer": f"{system} about {product}", "sources": "",
                    "finish reason": "stop", "latency s": 1.0 + evaluation.SYSTEMS.index(system),
                    "ROUGE-L": rouge_by_system[system] + offsets[index] + rng.normal(0, noise / 10 + 1e-9),
                    "cosine": 0.5, "title facts": np.nan if index else 0.25, "catalogue facts": 0.5,
                    "invents numbers": 0.0, "repetition": 0.1, "stops": 1.0, "loops": 0.0,
                })
    return pd.DataFrame(rows)


def test_metrics_table_has_means_and_intervals_per_set_and_system_in_course_order():
    table = evaluation.metrics_table(_scored(dict(zip(evaluation.SYSTEMS, (0.1, 0.2, 0.3, 0.4)))), seed=1)
    assert list(table.index) == [(s, m) for s in evaluation.SETS for m in evaluation.SYSTEMS]
    assert table.loc[("held-out", "RAG (base)"), "ROUGE-L"] == pytest.approx(0.3)
    # A product without facts is left out of the mean, not counted as zero.
    assert table.loc[("demo", "foundation"), "title facts"] == pytest.approx(0.25)
    assert (table["products"] == 30).all()
    assert (table["ROUGE-L low"] <= table["ROUGE-L"]).all() and (table["ROUGE-L"] <= table["ROUGE-L high"]).all()


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.5, 0.2, 20), rng.normal(0.5, 0.2, 2000)
    low_small, high_small = evaluation.bootstrap_interval(small, seed=1)
    low_large, high_large = evaluation.bootstrap_interval(large, seed=1)
    assert low_small < small.mean() < high_small and low_large < large.mean() < high_large
    assert high_large - low_large < (high_small - low_small) / 5
    assert evaluation.bootstrap_interval(small, seed=1) == (low_small, high_small)  # seeded


def test_a_clear_difference_is_better_and_noise_is_no_clear_difference():
    clear = evaluation.paired_differences(_scored(dict(zip(evaluation.SYSTEMS, (0.1, 0.3, 0.1, 0.3)))), seed=1)
    noisy = evaluation.paired_differences(_scored(dict(zip(evaluation.SYSTEMS, (0.1, 0.102, 0.1, 0.1))),
                                                  noise=0.2), seed=1)
    def verdict(table, effect, metric="ROUGE-L"):
        return table[(table["set"] == "held-out") & (table["effect"] == effect) & (table["metric"] == metric)].iloc[0]
    assert verdict(clear, "fine-tuning, without retrieval")["verdict"] == "better"
    assert verdict(clear, "retrieval, on the fine-tuned model")["verdict"] == "no clear difference"
    assert verdict(noisy, "fine-tuning, without retrieval")["verdict"] == "no clear difference"
    # Lower is better for loops: more loops after is "worse".
    assert evaluation.verdict(0.1, 0.3, higher_is_better=False) == "worse"
    assert evaluation.verdict(-0.3, -0.1, higher_is_better=False) == "better"


def test_the_demo_set_is_not_scored_into_the_verdict():
    differences = evaluation.paired_differences(_scored(dict.fromkeys(evaluation.SYSTEMS, 0.2)), seed=1)
    assert set(differences["set"]) == {"in-index", "held-out"}


def test_conclusion_lists_each_effect_from_its_verdicts():
    scored = _scored(dict(zip(evaluation.SYSTEMS, (0.1, 0.3, 0.1, 0.3))))
    differences = evaluation.paired_differences(scored, seed=1)
    lines = evaluation.conclusions(differences)
    fine_tuning = next(line for line in lines if "fine-tuning, without retrieval" in line)
    retrieval = next(line for line in lines if "retrieval, on the base model" in line)
    assert "better: ROUGE-L |" in fine_tuning
    assert "better: - |" in retrieval and "worse: - |" in retrieval
    targets = evaluation.fine_tune_targets(evaluation.metrics_table(scored, seed=1), differences)
    text = evaluation.written_conclusion(differences, targets)
    assert "On held-out products, fine-tuning, without retrieval makes ROUGE-L better" in text
    assert "retrieval, on the base model makes no clear difference on ROUGE-L, cosine" in text
    # 0.3 is 3x 0.1, and the interval of the difference is above zero; stops 100%, loops 0%.
    assert (targets["result"] == "met").all() and text.endswith("The fine-tune meets all its targets on held-out products.")


def test_a_missed_target_is_named():
    scored = _scored(dict(zip(evaluation.SYSTEMS, (0.25, 0.3, 0.1, 0.3))))
    targets = evaluation.fine_tune_targets(evaluation.metrics_table(scored, seed=1),
                                           evaluation.paired_differences(scored, seed=1))
    # 0.3 against 2 × 0.25: short of the line by 0.2, more than the cross-run margin.
    assert targets.loc["ROUGE-L, fine-tuned ÷ foundation", "result"] == "missed"
    text = evaluation.written_conclusion(evaluation.paired_differences(scored, seed=1), targets)
    assert "misses ROUGE-L, fine-tuned ÷ foundation" in text


def test_a_target_within_the_cross_run_margin_of_its_line_is_not_claimed():
    margin = config.CROSS_RUN_MARGIN
    assert evaluation.clears(0.90 - 0.90, margin, yes="met", no="missed") == config.NOT_STABLE
    assert evaluation.clears(0.95 - 0.90, margin, yes="met", no="missed") == config.NOT_STABLE
    assert evaluation.clears(1.00 - 0.90, margin, yes="met", no="missed") == "met"  # every answer stops
    assert evaluation.clears(0.10 - 0.00, margin, yes="met", no="missed") == "met"  # none loops
    assert evaluation.clears(0.70 - 0.90, margin, yes="met", no="missed") == "missed"
    # Without a margin (the base model's answers reproduce), a share on its line holds.
    assert evaluation.clears(6 / 60 - 0.10, 0.0, yes="yes", no="no") == "yes"


def test_a_verdict_is_checked_only_when_both_ends_clear_zero_by_more_than_the_margin():
    margin = config.CROSS_RUN_MARGIN
    # The two CPUs' intervals of one difference (06, held-out, retrieval on the fine-tuned model, catalogue facts):
    # "no clear difference" on one, "better" on the other; checked, both are "not stable across runs".
    assert evaluation.verdict(-0.007, 0.085, True) != evaluation.verdict(0.030, 0.129, True)
    assert evaluation.checked_verdict(-0.007, 0.085, True, margin) == config.NOT_STABLE
    assert evaluation.checked_verdict(0.030, 0.129, True, margin) == config.NOT_STABLE
    assert evaluation.checked_verdict(0.32, 0.43, True, margin) == "better"
    assert evaluation.checked_verdict(-0.49, -0.21, True, margin) == "worse"
    assert evaluation.checked_verdict(-0.30, 0.25, True, margin) == "no clear difference"
    # Between untrained systems there is no margin: the 95% verdict is the checked one.
    assert evaluation.cross_run_margin("foundation", "RAG (base)") == 0
    assert evaluation.checked_verdict(0.004, 0.081, True, 0.0) == "better"


def test_demo_side_by_side_has_the_reference_and_one_column_per_system():
    scored = _scored(dict.fromkeys(evaluation.SYSTEMS, 0.2), products=4)
    scored["product"] = scored["product"].str.rsplit(" ", n=1).str[0]
    table = evaluation.demo_side_by_side(scored)
    assert list(table.columns) == ["reference", *evaluation.SYSTEMS]
    assert table.loc["Girls Ballet Tutu Neon Blue", "fine-tuned"] == "fine-tuned about Girls Ballet Tutu Neon Blue 0"
    assert table.loc["Mog's Kittens", "reference"] == "reference of Mog's Kittens 1"


def test_markdown_table_has_a_header_and_one_line_per_row():
    table = evaluation.with_intervals(evaluation.metrics_table(_scored(dict.fromkeys(evaluation.SYSTEMS, 0.2)), seed=1))
    lines = evaluation.markdown_table(table).splitlines()
    assert lines[0].startswith("| set | system | ROUGE-L")
    assert len(lines) == 2 + len(table) == 2 + 8
    assert lines[-1].startswith("| held-out | RAG (fine-tuned) | 0.20 [0.20, 0.20] |")
