"""One result on every x86 CPU: every claim nbval checks, computed from two runs of the same course on two CPUs.

tests/fixtures/cross_cpu/ holds what main 7f77cae wrote on two machines: its committed run (a 2-core AMD EPYC,
AVX2 only) and shared/evidence/xeon-avx512-7f77cae (a 2-core Intel Xeon with AVX-512 and AMX, the kind of machine
the notebooks are now committed from). Their base model
answered identically; their fine-tunes parted at training step 10 and then answered differently (105 of 124
fine-tuned answers differ). A checked claim that differs between these two tables would fail nbval on one of them. The margins were chosen
from these same two runs, so this is the check they were sized by, not a guarantee for a third CPU.

The answers are scored again with today's metrics, so a change to a metric or a verdict rule is tried on both runs.
The fixtures hold for the sample they were made from: with another data/raw/trn.json these tests skip, saying so.
"""
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from langchain_core.documents import Document

from helpers import config, evaluation, models, retrieval, training

FIXTURES = Path(__file__).parent / "fixtures" / "cross_cpu"
RUNS = ("avx2-7f77cae", "xeon-avx512-7f77cae")
# sha256 of data/raw/trn.json at 7f77cae, the sample both runs were made from.
SAMPLE_SHA256 = "7cdabdbcef1ddb07bb422ac6788374a7be5fb8750ab37c31823eca45070edd35"


def _sample_is_the_fixtures_one() -> bool:
    return hashlib.sha256(config.paths().raw_sample.read_bytes()).hexdigest() == SAMPLE_SHA256


pytestmark = pytest.mark.skipif(not _sample_is_the_fixtures_one(),
                                reason="data/raw/trn.json is not the sample the two CPUs' runs were made from")


@pytest.fixture(scope="module")
def runs() -> dict[str, SimpleNamespace]:
    profile = config.cpu_profile()
    loaded = {}
    for run in RUNS:
        answers = pd.read_csv(FIXTURES / run / "comparison_answers.csv", dtype={"uid": str}, keep_default_na=False)
        answers = answers.drop(columns=list(evaluation.METRICS))  # scored again below, with today's metrics
        scored = evaluation.score_answers(answers, profile.embedding_model)
        differences = evaluation.paired_differences(scored, seed=profile.seed)
        metrics = evaluation.metrics_table(scored, seed=profile.seed)
        loaded[run] = SimpleNamespace(
            scored=scored, differences=differences, metrics=metrics,
            targets=evaluation.fine_tune_targets(metrics, differences),
            held_out=pd.read_csv(FIXTURES / run / "fine_tuned_heldout_cpu.csv", keep_default_na=False),
            losses=json.loads((FIXTURES / run / "training_losses.json").read_text())["losses"],
        )
    return loaded


def _checked_claims(run: SimpleNamespace) -> dict:
    """Every claim the notebooks check that depends on the fine-tune, as the notebooks compute it."""
    return {
        "06 verdict table": evaluation.verdict_table(run.differences).to_dict(),
        "06 targets": run.targets["result"].to_dict(),
        "06 written conclusion": evaluation.written_conclusion(run.differences, run.targets),
        "03 expectations": models.expectations_table(
            *_failure_counts(run.held_out), models.FINE_TUNED_EXPECTED, margin=config.CROSS_RUN_MARGIN).to_dict(),
        "03 loss trend": training.loss_trend(SimpleNamespace(losses=run.losses)),
        "05 facts used (fine-tuned)": retrieval.facts_used_claim(_demo_rag_results(run.scored, "RAG (fine-tuned)")),
        "05 facts used (base)": retrieval.facts_used_claim(_demo_rag_results(run.scored, "RAG (base)")),
    }


def _failure_counts(held_out: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    # The table keeps each answer's failure modes; whether it stopped is one of them.
    answers = [SimpleNamespace(text=row.answer, stopped=models.NO_STOP not in row._3) for row in held_out.itertuples()]
    return models.failure_mode_counts(list(held_out["product"]), answers), len(answers)


def _demo_rag_results(scored: pd.DataFrame, system: str) -> list[dict]:
    """Notebook 05's chain results for the demo products, rebuilt from the table (sources are kept as titles)."""
    rows = scored[(scored["set"] == "demo") & (scored["system"] == system)]
    return [{"product": row.product, "answer": row.answer, "uid": row.uid,
             "sources": [Document(page_content="", metadata={"title": title,
                                                             "uid": row.uid if title == row.product else f"other-{rank}"})
                         for rank, title in enumerate(row.sources.split(" | "))]}
            for row in rows.itertuples()]


def test_the_two_runs_trained_different_adapters(runs):
    # What the fixtures are a test of: the same code, two CPUs, other answers from the fine-tune only.
    avx2, xeon = (runs[run].scored.set_index(["set", "system", "uid"])["answer"] for run in RUNS)
    differs = (avx2 != xeon.reindex(avx2.index)).groupby(level="system").sum()
    assert differs["foundation"] == 0 and differs["RAG (base)"] == 0
    assert differs["fine-tuned"] > 50 and differs["RAG (fine-tuned)"] > 50
    first_difference = next(step for step, (a, b) in enumerate(zip(runs[RUNS[0]].losses, runs[RUNS[1]].losses), 1)
                            if a != b)
    assert first_difference == 10


def test_the_plain_95_percent_verdicts_differ_between_the_two_runs(runs):
    # Why the checked verdicts need a margin: without one, two verdicts (and so the conclusion) flip.
    plain = {run: runs[run].differences.set_index(["set", "effect", "metric"])["verdict"] for run in RUNS}
    flipped = plain[RUNS[0]][plain[RUNS[0]] != plain[RUNS[1]]]
    assert len(flipped) >= 2, flipped


def test_every_checked_claim_is_the_same_on_both_cpus(runs):
    claims = {run: _checked_claims(runs[run]) for run in RUNS}
    for name in claims[RUNS[0]]:
        assert claims[RUNS[0]][name] == claims[RUNS[1]][name], name


def test_the_margin_covers_the_drift_measured_between_the_two_runs(runs):
    # CROSS_RUN_MARGIN was chosen as the largest move of an interval's end between these runs, rounded up.
    keys = ["set", "effect", "metric"]
    ends = runs[RUNS[0]].differences.merge(runs[RUNS[1]].differences, on=keys, suffixes=(" a", " b"))
    trained = ends["margin a"] > 0
    drift = pd.concat([(ends["low a"] - ends["low b"]).abs(), (ends["high a"] - ends["high b"]).abs()], axis=1).max(axis=1)
    assert drift[trained].max() < config.CROSS_RUN_MARGIN
    assert drift[~trained].max() < 1e-6  # the untrained systems' answers are the same: no margin needed there


def test_target_shares_moved_by_at_most_half_the_margin(runs):
    # A target is met when its number clears the line by at least CROSS_RUN_MARGIN: twice the largest move measured.
    shares = [runs[run].metrics.loc[list(evaluation.SCORED_SETS), ["stops", "loops", "ROUGE-L"]] for run in RUNS]
    moved = (shares[0] - shares[1]).abs()
    assert moved.xs("foundation", level="system").max().max() == 0
    assert moved.max().max() <= config.CROSS_RUN_MARGIN / 2 + 1e-9
    held_out = [_failure_counts(runs[run].held_out) for run in RUNS]
    for mode in (models.NO_STOP, "loops"):
        counts = [counts["answers"].get(mode, 0) / total for counts, total in held_out]
        assert abs(counts[0] - counts[1]) <= config.CROSS_RUN_MARGIN / 2 + 1e-9, mode


def test_the_demo_facts_share_moved_by_less_than_its_margin(runs):
    def share(run):
        counts = [retrieval.own_facts_stated(result, retrieval.load_facts())
                  for result in _demo_rag_results(runs[run].scored, "RAG (fine-tuned)")]
        return sum(stated for stated, _ in counts) / sum(total for _, total in counts)
    assert abs(share(RUNS[0]) - share(RUNS[1])) < config.FACTS_USED_MARGIN
