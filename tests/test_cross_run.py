"""One result on every x86 CPU: every claim nbval checks about a trained system, computed from three trainings of the
course whose adapters differ, must be the same, and every margin must cover the move measured between them.

tests/fixtures/cross_run/ holds three runs on the committed sample (benchmarks/cross_run.py wrote them): "committed",
the run the committed notebooks come from, and "seed-1234" and "seed-2024", the same adapter trained again with two
other training seeds (LoRA's initial weights and the order of the examples). Their base model answers alike; their
fine-tunes do not. Two CPUs train different adapters from the same code too (an AVX2 AMD EPYC and an AVX-512 Intel
Xeon parted at training step 10): a checked claim that differed between these runs would fail nbval on one of them,
and a new seed moves a fine-tune further than a new CPU's last bits of arithmetic do.

The answers are scored again with today's metrics, so a change to a metric or a verdict rule is tried on every run.
The fixtures belong to the sample they were made from: with another data/raw/trn.json this test fails and says how
to make them again.
"""
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from langchain_core.documents import Document

from helpers import config, evaluation, models, retrieval

FIXTURES = Path(__file__).parent / "fixtures" / "cross_run"
RUNS = ("committed", "seed-1234", "seed-2024")
SAMPLE_SHA256_FILE = FIXTURES / "sample.sha256"


def test_the_fixtures_were_made_from_the_committed_sample():
    made_from = SAMPLE_SHA256_FILE.read_text().split()[0]
    assert hashlib.sha256(config.paths().raw_sample.read_bytes()).hexdigest() == made_from, (
        "data/raw/trn.json changed since tests/fixtures/cross_run/ was made: run `make course`, then "
        "benchmarks/cross_run.py --committed, --training-seed 1234 and --training-seed 2024, and write the new "
        "sample's sha256 to "
        f"{SAMPLE_SHA256_FILE.relative_to(FIXTURES.parents[1])}")


@pytest.fixture(scope="module")
def runs() -> dict[str, SimpleNamespace]:
    profile = config.cpu_profile()
    loaded = {}
    for run in RUNS:
        answers = pd.read_csv(FIXTURES / run / "comparison_answers.csv", dtype={"uid": str}, keep_default_na=False)
        answers["finish reason"] = answers["finish reason"].replace("", None)
        scored = evaluation.score_answers(answers, profile.embedding_model)
        metrics = evaluation.metrics_table(scored, seed=profile.seed)
        differences = evaluation.paired_differences(scored, seed=profile.seed)
        loaded[run] = SimpleNamespace(scored=scored, metrics=metrics, differences=differences,
                                      targets=evaluation.targets_table(metrics, differences, scored),
                                      losses=json.loads((FIXTURES / run / "training_losses.json").read_text())["losses"])
    return loaded


def _answers(run: SimpleNamespace, set_name: str, system: str) -> pd.DataFrame:
    scored = run.scored
    return scored[(scored["set"] == set_name) & (scored["system"] == system)]


def _demo_results(run: SimpleNamespace, system: str) -> list[dict]:
    rows = _answers(run, "demo", system)
    results = []
    for row in rows.to_dict("records"):
        titles = row["sources"].split(" | ") if row["sources"] else []
        sources = [Document(page_content="", metadata={"uid": uid, "title": title})
                   for uid, title in zip(row["retrieved uids"].split(), titles)]
        results.append({"product": row["product"], "answer": row["answer"], "sources": sources,
                        "record": retrieval.catalogue_record(row["product"], sources)})
    return results


def _fine_tuned_expectations(run: SimpleNamespace) -> pd.DataFrame:
    """Notebook 03's checked table, from the classic fine-tune's held-out answers of the run."""
    held_out = _answers(run, "held-out", "fine-tuned")
    records = held_out[["uid", "product", "reference"]].rename(columns={"reference": "description"}).to_dict("records")
    answers = [models.Answer(text, reason == "stop", 0) for text, reason in zip(held_out["answer"], held_out["finish reason"])]
    counts = evaluation.failure_mode_counts(records, answers)
    return evaluation.expectations_table(counts, len(answers), evaluation.FINE_TUNED_EXPECTED)


def _checked_claims(run: SimpleNamespace) -> dict:
    """Every claim the notebooks check that depends on the fine-tune, computed as the notebooks compute it."""
    from helpers.training.statistics import loss_trend

    return {
        "03 loss trend": loss_trend(SimpleNamespace(losses=tuple(run.losses))),
        "03 expectations": _fine_tuned_expectations(run)["holds"].to_dict(),
        "05 facts used (grounded)": retrieval.facts_used_claim(_demo_results(run, "grounded")),
        "06 verdicts": evaluation.verdict_table(run.differences)["checked verdict"].to_dict(),
        "06 targets": run.targets["result"].to_dict(),
        "06 conclusion": evaluation.written_conclusion(run.differences, run.targets),
    }


def test_the_runs_trained_different_adapters_and_the_base_model_answered_alike(runs):
    committed = runs["committed"]
    for name in RUNS[1:]:
        other = runs[name]
        assert committed.losses != other.losses
        for system in evaluation.TRAINED:
            differing = (_answers(committed, "held-out", system)["answer"].to_numpy()
                         != _answers(other, "held-out", system)["answer"].to_numpy()).sum()
            assert differing > 0, (name, system)
        for system in ("foundation", *evaluation.BASELINES):
            assert list(_answers(committed, "held-out", system)["answer"]) == list(_answers(other, "held-out", system)["answer"])


def test_every_checked_claim_is_the_same_in_every_run(runs):
    claims = {name: _checked_claims(runs[name]) for name in RUNS}
    for name in RUNS[1:]:
        for claim, value in claims["committed"].items():
            assert claims[name][claim] == value, (name, claim)


def _largest_move(values) -> float:
    return float(np.nanmax(values) - np.nanmin(values))


def test_the_verdict_margin_covers_the_move_of_every_primary_interval(runs):
    keys = ["set", "effect", "metric"]
    primary = {name: runs[name].differences.query("family == 'primary'").set_index(keys) for name in RUNS}
    moves = [_largest_move([primary[name].loc[key, end] for name in RUNS])
             for key in primary["committed"].index for end in ("low", "high")]
    assert max(moves) <= config.CROSS_RUN_MARGIN, max(moves)


def test_each_targets_margin_covers_the_move_of_its_number(runs):
    for (set_name, system, metric) in evaluation.TARGETS:
        move = _largest_move([runs[name].metrics.loc[(set_name, system), metric] for name in RUNS])
        assert move <= config.TARGET_MARGINS[(set_name, system, metric)], (set_name, system, metric, move)
    copy = [runs[name].differences.query("set == 'in-index' and effect == 'grounded vs copying the top record' "
                                         "and metric == 'catalogue facts'")["difference"].iloc[0] for name in RUNS]
    assert _largest_move(copy) <= config.TARGET_MARGINS[("in-index", "grounded", "catalogue facts vs the copy baseline")]
    invents = [_answers(runs[name], "held-out", "fine-tuned")["invents"].mean() for name in RUNS]
    assert _largest_move(invents) <= config.TARGET_MARGINS[("held-out", "fine-tuned", "invents")]


def test_the_demo_facts_share_moved_by_less_than_its_margin(runs):
    facts = retrieval.load_facts()

    def share(run):
        counts = [retrieval.own_facts_stated(result, facts) for result in _demo_results(run, "grounded")]
        return sum(stated for stated, _ in counts) / sum(total for _, total in counts)
    assert _largest_move([share(runs[name]) for name in RUNS]) < config.FACTS_USED_MARGIN
