"""The metrics mean what the comparison says they mean, and the verdict follows the numbers."""
import numpy as np
import pandas as pd
import pytest

from helpers import config, display, evaluation

LOOP = "It is also very easy to put on and it is very easy to take off. " * 4
REFERENCE = "Written by Judith Kerr in 1970. Mog has 3 kittens and lives in London."


@pytest.fixture(scope="module")
def embedding_model():
    return config.cpu_profile().embedding_model


def test_rouge_l_is_one_for_identical_and_zero_for_disjoint_texts():
    assert evaluation.rouge_l("a neon pink ballet tutu", "a neon pink ballet tutu") == 1.0
    assert evaluation.rouge_l("stainless chef knife", "a neon pink ballet tutu") == 0.0
    assert 0 < evaluation.rouge_l("a pink tutu for girls", "a neon pink ballet tutu") < 1


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


def _scored(values_by_system: dict[str, float], products: int = 60, noise: float = 0.0,
            metric: str = "catalogue facts") -> pd.DataFrame:
    """A hand-made scored answer table: every set and shown system, ``products`` products, chosen values of one
    metric plus seeded noise of +-``noise`` per product (the same for every system of a product: a paired design);
    every other metric constant."""
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-noise, noise, size=products)
    rows = []
    for set_name in evaluation.SETS:
        for system in evaluation.SHOWN:
            for index in range(products):
                product = config.DEMO_PRODUCTS[index % 4] + f" {index}"
                row = {"set": set_name, "system": system, "uid": f"U{index}", "product": product,
                       "reference": f"reference of {product}", "answer": f"{system} about {product}", "sources": "",
                       "finish reason": "stop", "latency s": 1.0, "facts": "",
                       **{name: 0.5 for name in evaluation.METRICS}}
                row.update({"contradicts": 0.0, "invents": 0.0, "neighbour facts": 0.0, "stops": 1.0, "loops": 0.0,
                            "title facts": np.nan if index == 0 else 0.9, "fact precision": 1.0})
                row[metric] = values_by_system.get(system, 0.5) + offsets[index] + rng.normal(0, noise / 10 + 1e-9)
                rows.append(row)
    return pd.DataFrame(rows)


def test_metrics_table_has_means_intervals_and_n_per_set_and_system_baselines_first():
    table = evaluation.metrics_table(_scored({"grounded": 0.9, "copy the top record": 0.8}), seed=1)
    assert list(table.index) == [(s, m) for s in evaluation.SETS for m in evaluation.SHOWN]
    assert table.index[1] == ("demo", "title only") and table.index[2] == ("demo", "foundation")
    assert table.loc[("held-out", "grounded"), "catalogue facts"] == pytest.approx(0.9)
    # A product without title facts is left out of that mean and of its n, not counted as zero.
    assert table.loc[("held-out", "grounded"), "title facts n"] == 59
    assert (table["products"] == 60).all()
    low, high = table["catalogue facts low"], table["catalogue facts high"]
    assert ((low <= table["catalogue facts"]) & (table["catalogue facts"] <= high)).all()


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.5, 0.2, 20), rng.normal(0.5, 0.2, 2000)
    low_small, high_small = evaluation.bootstrap_interval(small, seed=1)
    low_large, high_large = evaluation.bootstrap_interval(large, seed=1)
    assert low_small < small.mean() < high_small and low_large < large.mean() < high_large
    assert high_large - low_large < (high_small - low_small) / 5
    assert evaluation.bootstrap_interval(small, seed=1) == (low_small, high_small)  # seeded


def test_a_paired_interval_resamples_pairs_and_is_zero_when_nothing_differs():
    rng = np.random.default_rng(4)
    before = rng.random(60)
    same = evaluation.paired_interval(before, before, seed=1)
    assert (same.low, same.high, same.mean, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = evaluation.paired_interval(before, before + 0.1 + rng.normal(0, 0.01, 60), seed=1)
    # Paired: the products' own spread (0.29) cancels, and the interval is narrow around +0.1.
    assert 0.09 < shifted.low < shifted.mean < shifted.high < 0.11 and shifted.p_value < 0.001
    with_gaps = evaluation.paired_interval([1.0, np.nan, 0.0, 1.0], [1.0, 1.0, np.nan, 0.0], seed=1)
    assert with_gaps.n == 2  # a pair with a missing value is left out


def test_a_clear_difference_is_better_and_noise_is_no_clear_difference():
    clear = evaluation.paired_differences(_scored({"grounded": 0.9, "RAG (ungated)": 0.5}), seed=1)
    noisy = evaluation.paired_differences(_scored({"grounded": 0.5}, noise=0.2), seed=1)

    def row(table, effect, metric="catalogue facts", set_name="in-index"):
        return table[(table["set"] == set_name) & (table["effect"] == effect) & (table["metric"] == metric)].iloc[0]
    assert row(clear, "the gate")["verdict"] == "better"
    assert row(clear, "the gate")["checked verdict"] == "better"  # primary, and clear of the margin
    assert row(noisy, "the gate")["verdict"] == "no clear difference"
    # Lower is better for contradictions: more of them after is "worse".
    assert evaluation.verdict(0.1, 0.3, higher_is_better=False) == "worse"
    assert evaluation.verdict(-0.3, -0.1, higher_is_better=False) == "better"


def test_the_primary_family_is_corrected_and_the_rest_is_exploratory():
    differences = evaluation.paired_differences(_scored({"grounded": 0.9}), seed=1)
    primary = differences[differences["family"] == "primary"]
    assert len(primary) == len(evaluation.PRIMARY)
    assert primary["adjusted p"].notna().all() and (primary["adjusted p"] >= primary["p"]).all()
    assert differences.loc[differences["family"] == "exploratory", "adjusted p"].isna().all()
    assert list(evaluation.verdict_table(differences).index) == list(evaluation.PRIMARY)


def test_a_primary_difference_that_the_correction_does_not_support_is_no_clear_difference():
    # An interval that excludes zero with a p-value of 0.04 among eight comparisons that show nothing.
    rows = [{"set": "held-out", "effect": "the gate", "metric": "invents", "low": -0.2, "high": -0.01, "p": 0.04,
             "n": 60, "family": "primary", "margin": 0.0}]
    rows += [{**rows[0], "metric": "contradicts", "low": -0.1, "high": 0.1, "p": 0.9}] * 7
    checked = evaluation.with_checked_verdicts(pd.DataFrame(rows))
    assert checked.loc[0, "adjusted p"] > evaluation.FALSE_DISCOVERY_RATE
    assert checked.loc[0, "checked verdict"] == "no clear difference"


def test_no_verdict_below_the_minimum_number_of_products():
    differences = evaluation.paired_differences(_scored({"grounded": 0.9}, products=3), seed=1)
    assert (differences["checked verdict"] == evaluation.TOO_FEW).all()


def test_the_demo_set_is_not_scored_into_the_verdict():
    differences = evaluation.paired_differences(_scored({}), seed=1)
    assert set(differences["set"]) == {"in-index", "held-out"}


def test_targets_are_met_missed_or_not_claimed_with_the_margin():
    scored = _scored({"grounded": 0.97, "copy the top record": 0.8})
    metrics, differences = evaluation.metrics_table(scored, seed=1), evaluation.paired_differences(scored, seed=1)
    demo = scored[(scored["set"] == "demo") & (scored["system"] == "grounded")].index[:4]
    scored.loc[demo, "product"] = list(config.DEMO_PRODUCTS)
    scored.loc[demo, "catalogue facts"] = 1.0
    targets = evaluation.targets_table(metrics, differences, scored)
    assert targets.loc["in-index, grounded: catalogue facts at least 0.90", "result"] == "met"  # 0.97: 0.07 past
    assert targets.loc["in-index, grounded: catalogue facts at least the copy baseline's", "result"] == "met"
    assert targets.loc["held-out, grounded: title facts at least 0.80", "result"] == "met"  # 0.90
    assert targets.loc["held-out, grounded: contradicts at most 0.05", "result"] == "met"  # none: 0.05 below
    assert targets.loc[targets.index[-1], "result"] == "met" and targets.iloc[-1]["measured"] == "4 of 4"
    near = evaluation.targets_table(evaluation.metrics_table(_scored({"grounded": 0.92}), seed=1), differences, scored)
    assert near.loc["in-index, grounded: catalogue facts at least 0.90", "result"] == config.NOT_STABLE
    text = evaluation.written_conclusion(differences, near)
    assert "In-index, the gate: better on catalogue facts." in text
    assert text.endswith("not claimed.") and "Targets:" in text


def test_a_target_within_the_margin_of_its_line_is_not_claimed():
    margin = 0.05
    assert evaluation.clears(0.90 - 0.90, margin, yes="met", no="missed") == config.NOT_STABLE
    assert evaluation.clears(1.00 - 0.90, margin, yes="met", no="missed") == "met"  # every answer stops
    assert evaluation.clears(0.70 - 0.90, margin, yes="met", no="missed") == "missed"
    assert evaluation.clears(6 / 60 - 0.10, 0.0, yes="yes", no="no") == "yes"


def test_a_verdict_is_checked_only_when_both_ends_clear_zero_by_more_than_the_margin():
    margin = config.CROSS_RUN_MARGIN
    # The two CPUs' intervals of one difference of the old comparison: "no clear difference" on one, "better" on
    # the other; checked, both are "not stable across runs".
    assert evaluation.verdict(-0.007, 0.085, True) != evaluation.verdict(0.030, 0.129, True)
    assert evaluation.checked_verdict(-0.007, 0.085, True, margin) == config.NOT_STABLE
    assert evaluation.checked_verdict(0.030, 0.129, True, margin) == config.NOT_STABLE
    assert evaluation.checked_verdict(0.32, 0.43, True, margin) == "better"
    assert evaluation.checked_verdict(-0.49, -0.21, True, margin) == "worse"
    assert evaluation.checked_verdict(-0.30, 0.25, True, margin) == "no clear difference"
    # Between systems without an adapter there is no margin: the 95% verdict is the checked one.
    assert evaluation.cross_run_margin("foundation", "title only") == 0
    assert evaluation.cross_run_margin("copy the top record", "grounded") == margin
    assert evaluation.checked_verdict(0.004, 0.081, True, 0.0) == "better"


def test_side_by_side_has_the_reference_and_each_systems_answer_with_its_facts():
    scored = _scored({}, products=4)
    scored["product"] = scored["product"].str.rsplit(" ", n=1).str[0]
    scored["facts"] = "right: age 2-8"
    table = evaluation.side_by_side(scored, "demo")
    assert list(table.columns) == ["reference", *evaluation.SYSTEMS]
    assert table.loc["Girls Ballet Tutu Neon Blue", "grounded"] == ("grounded about Girls Ballet Tutu Neon Blue 0\n"
                                                                    "— right: age 2-8")


def test_markdown_table_has_a_header_and_one_line_per_row():
    table = evaluation.with_intervals(evaluation.metrics_table(_scored({}), seed=1), ["catalogue facts"])
    lines = display.markdown_table(table).splitlines()
    assert "catalogue facts" in lines[0] and len(lines) == 2 + len(table) == 2 + 12
    assert "grounded" in lines[-1] and "0.50 [0.50, 0.50]" in lines[-1]


def test_the_answers_are_scored_on_facts_form_and_wording(embedding_model):
    answers = pd.DataFrame([
        {"set": "held-out", "system": "grounded", "uid": "0933697214", "product": "The Book of Revelation",
         "reference": "First published in 1919; 208 pages.", "answer": "A Paperback of 164 pages.",
         "finish reason": "stop"},
        {"set": "held-out", "system": "title only", "uid": "0933697214", "product": "The Book of Revelation",
         "reference": "First published in 1919; 208 pages.", "answer": "The Book of Revelation",
         "finish reason": None},
    ])
    scored = evaluation.score_answers(answers, embedding_model)
    grounded, title = scored.iloc[0], scored.iloc[1]
    assert grounded["contradicts"] == 1.0 and grounded["invents"] == 1.0 and grounded["fact precision"] == 0.5
    assert grounded["catalogue facts"] == pytest.approx(1 / 5) and np.isnan(grounded["title facts"])
    assert grounded["stops"] == 1.0 and np.isnan(title["stops"]) and np.isnan(title["loops"])  # baselines generate nothing
    assert title["invents"] == 0.0 and np.isnan(title["fact precision"])


def test_a_difference_over_too_few_products_says_so_in_the_table():
    differences = pd.DataFrame([
        {"set": "held-out", "effect": "fine-tuning", "metric": "fact precision", "difference": -0.5, "low": -0.6,
         "high": -0.4, "family": "exploratory", "n": evaluation.MIN_PRODUCTS - 1},
        {"set": "held-out", "effect": "fine-tuning", "metric": "title facts", "difference": 0.5, "low": 0.4,
         "high": 0.6, "family": "primary", "n": evaluation.MIN_PRODUCTS},
    ])
    table = evaluation.differences_with_intervals(differences, ["fact precision", "title facts"])
    row = table.loc[("held-out", "fine-tuning")]
    assert row["fact precision"] == f"-0.50 [-0.60, -0.40] (n={evaluation.MIN_PRODUCTS - 1}: too few products)"
    assert row["title facts"] == "+0.50 [+0.40, +0.60]*"


def test_every_system_is_set_against_both_baselines_where_it_loses_too():
    rows = []
    for index, uid in enumerate(f"{number:04d}" for number in range(evaluation.MIN_PRODUCTS)):
        right = float(index % 2 == 0)  # half of the products: the system gets the fact the baseline always gets
        for system, value in (("copy the top record", 1.0), ("title only", 0.0), ("foundation", 0.0),
                              ("fine-tuned", right), ("RAG (ungated)", 1.0), ("grounded", 1.0)):
            rows.append({"set": "held-out", "system": system, "uid": uid, "title facts": value})
    table = evaluation.against_baselines(pd.DataFrame(rows), seed=0, metrics_shown=["title facts"], sets=["held-out"])
    assert len(table) == len(evaluation.SYSTEMS) * len(evaluation.BASELINES)
    assert table.loc[("held-out", "grounded", "title only"), "title facts"] == "+1.00 [+1.00, +1.00] better"
    assert table.loc[("held-out", "foundation", "copy the top record"), "title facts"] == "-1.00 [-1.00, -1.00] worse"
    assert table.loc[("held-out", "grounded", "copy the top record"), "title facts"].endswith("no clear difference")
    assert table.loc[("held-out", "fine-tuned", "copy the top record"), "title facts"].startswith("-0.50 [")


# --- The service's promotion gate ---------------------------------------------------------------------------------


def promotion_case(products: int):
    from helpers.models import Answer
    from helpers.synthetic import Fact

    records = [{"uid": f"u{i}", "product": f"Wooden Puzzle {i} (36 pieces)", "description": ""} for i in range(products)]
    facts = {record["uid"]: (Fact("pieces", "36", True),) for record in records}
    right = [Answer("A wooden puzzle with 36 pieces.", True, 8) for _ in records]
    return records, facts, right, Answer


def test_a_candidate_as_good_as_the_serving_adapter_is_promoted():
    records, facts, right, _ = promotion_case(40)
    check = evaluation.promotion_check(records, right, right, seed=1, facts=facts)
    assert list(check["verdict"]) == ["not worse"] * len(evaluation.PROMOTION_METRICS)
    assert evaluation.promotion_decision(check) == (True, "not worse than the serving adapter by more than 0.15 on "
                                                    "any of invents, contradicts, title facts, stops")


def test_a_candidate_that_invents_in_a_fifth_of_its_answers_is_refused_with_the_reason():
    records, facts, right, Answer = promotion_case(40)
    candidate = [Answer("A wooden puzzle with 120 pieces, ages 8-11.", True, 9) if i % 5 == 0 else answer
                 for i, answer in enumerate(right)]
    check = evaluation.promotion_check(records, right, candidate, seed=1, facts=facts).set_index("metric")
    assert check.loc["invents", "verdict"] == "worse" and check.loc["invents", "difference"] == pytest.approx(0.2)
    assert check.loc["stops", "verdict"] == "not worse"
    promoted, reason = evaluation.promotion_decision(check.reset_index())
    assert not promoted and "invents +0.20" in reason and "margin 0.15" in reason


def test_too_few_products_are_not_judged_and_the_candidate_waits_for_an_instructor():
    records, facts, right, _ = promotion_case(5)
    promoted, reason = evaluation.promotion_decision(evaluation.promotion_check(records, right, right, 1, facts=facts))
    assert not promoted and reason.startswith("too few products with facts to judge (5 < 30)")


def test_the_promotion_products_leave_out_what_the_job_trained_on(monkeypatch):
    held_out = [{"uid": f"u{i}", "product": f"Product {i}"} for i in range(60)]
    monkeypatch.setattr(evaluation, "evaluation_samples", lambda profile: {"held-out": held_out})
    products = evaluation.promotion_products(config.lab_profile(), trained_titles=["Product 0", "Product 7"])
    assert len(products) == evaluation.PROMOTION_PRODUCTS
    assert {"Product 0", "Product 7"}.isdisjoint(record["product"] for record in products)


def test_an_interval_end_shown_as_the_margin_is_within_it():
    records, facts, right, Answer = promotion_case(40)
    check = evaluation.promotion_check(records, right, right, seed=1, facts=facts, margin=0.0)
    assert set(check["verdict"]) == {"not worse"} and set(check["better"]) == {"lower", "higher"}
