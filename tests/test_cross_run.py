"""One result on every x86 CPU: every claim nbval checks about a trained system, computed from two runs whose adapters
differ, must be the same.

tests/fixtures/cross_run/ holds two runs of the course on the committed sample (benchmarks/cross_run.py wrote
them): "committed", the run the committed notebooks come from, and "seed-1234", the same adapter trained again with
another training seed (LoRA's initial weights and the order of the examples). Their base model answers alike; their
fine-tunes do not. A new seed moves a fine-tune further than a new CPU does (an AVX2 AMD EPYC and an AVX-512 Intel
Xeon trained adapters whose losses part at step 10 and then answered 105 of 124 prompts differently): a checked claim
that differs between these two tables would fail nbval on one of them, and a margin that covers the drift measured
here is on the safe side of the CPUs'.

The answers are scored again with today's metrics, so a change to a metric or a verdict rule is tried on both runs.
The fixtures belong to the sample they were made from: with another data/raw/trn.json this test fails and says to
make them again.
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
RUNS = ("committed", "seed-1234")
SAMPLE_SHA256_FILE = FIXTURES / "sample.sha256"


def test_the_fixtures_were_made_from_the_committed_sample():
    made_from = SAMPLE_SHA256_FILE.read_text().split()[0]
    assert hashlib.sha256(config.paths().raw_sample.read_bytes()).hexdigest() == made_from, (
        "data/raw/trn.json changed since tests/fixtures/cross_run/ was made: run `make course`, then "
        "benchmarks/cross_run.py --committed and --training-seed 1234, and write the new sample's sha256 to "
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
    counts = models.failure_mode_counts(records, answers)
    return models.expectations_table(counts, len(answers), models.FINE_TUNED_EXPECTED, margin=config.CROSS_RUN_MARGIN)


def _checked_claims(run: SimpleNamespace) -> dict:
    """Every claim the notebooks check that depends on the fine-tune, computed as the notebooks compute it."""
    from helpers.training import loss_trend

    return {
        "03 loss trend": loss_trend(SimpleNamespace(losses=tuple(run.losses))),
        "03 expectations": _fine_tuned_expectations(run)["holds"].to_dict(),
        "05 facts used (grounded)": retrieval.facts_used_claim(_demo_results(run, "grounded")),
        "06 verdicts": evaluation.verdict_table(run.differences)["checked verdict"].to_dict(),
        "06 targets": run.targets["result"].to_dict(),
        "06 conclusion": evaluation.written_conclusion(run.differences, run.targets),
    }


def test_the_two_runs_trained_different_adapters(runs):
    committed, other = (runs[name] for name in RUNS)
    assert committed.losses != other.losses
    for system in evaluation.TRAINED:
        differing = (_answers(committed, "held-out", system)["answer"].to_numpy()
                     != _answers(other, "held-out", system)["answer"].to_numpy()).sum()
        assert differing > 5, system
    # The base model and the baselines answer alike: only a trained system's answers move.
    for system in ("foundation", *evaluation.BASELINES):
        assert list(_answers(committed, "held-out", system)["answer"]) == list(_answers(other, "held-out", system)["answer"])


def test_every_checked_claim_is_the_same_in_both_runs(runs):
    committed, other = (_checked_claims(runs[name]) for name in RUNS)
    for claim in committed:
        assert committed[claim] == other[claim], claim


def test_the_margins_cover_the_drift_measured_between_the_two_runs(runs):
    committed, other = (runs[name] for name in RUNS)
    keys = ["set", "effect", "metric"]
    paired = committed.differences.merge(other.differences, on=keys, suffixes=(" a", " b"))
    trained = paired[paired["margin a"] > 0]
    drift = np.nanmax(np.abs(np.concatenate([trained["low a"] - trained["low b"], trained["high a"] - trained["high b"]])))
    assert drift <= config.CROSS_RUN_MARGIN, drift
    target_drift = max(abs(committed.metrics.loc[(set_name, system), metric] - other.metrics.loc[(set_name, system), metric])
                       for set_name, system, metric in evaluation.TARGETS)
    assert target_drift <= config.TARGET_MARGIN, target_drift
