"""Metrics with confidence intervals, the four-system comparison, its table, chart and derived verdict.

Four systems (foundation, fine-tuned, RAG on the base model, RAG on the fine-tuned model) answer three sets of
products: the four demo products of the reference solution, products that are in the index, and held-out products
that were neither trained on nor indexed. Each answer is scored against the product's real description and its
facts (helpers.synthetic keeps which facts each title carries and which only its description holds).

Every mean comes with a 95% bootstrap interval over products, and every comparison of two systems with a paired
bootstrap interval of the difference: a difference is called better or worse only where its interval excludes
zero, and "no clear difference" otherwise. Four demo products are anecdotes: they are shown as text, not scored
into a verdict.

What nbval checks is the verdict that kept clear of zero on two CPUs whose fine-tunes differ: where a fine-tuned
system takes part, an interval with an end (as printed) at most helpers.config.CROSS_RUN_MARGIN from zero, or a
target less than that margin from its line, is shown as "not stable across runs" and kept out of the written
conclusion; the 95% verdict itself stays in the differences' "verdict" column (outputs/tables/comparison_differences.csv).
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from helpers.config import CROSS_RUN_MARGIN, DEMO_PRODUCTS, NOT_STABLE, Profile, paths
from helpers.data import evaluation_samples
from helpers.models import clears, failure_modes
from helpers.retrieval import CourseModel, load_embeddings, rag_chain, retriever, styled_text_table
from helpers.synthetic import load_facts, states

SYSTEMS = ("foundation", "fine-tuned", "RAG (base)", "RAG (fine-tuned)")
SETS = ("demo", "in-index", "held-out")
SCORED_SETS = ("in-index", "held-out")
# Metric column → True when higher is better.
METRICS = {
    "ROUGE-L": True,
    "cosine": True,
    "title facts": True,
    "catalogue facts": True,
    "invents numbers": False,
    "repetition": False,
    "stops": True,
    "loops": False,
}
METRIC_DESCRIPTIONS = {
    "ROUGE-L": "longest common word subsequence with the reference (F1)",
    "cosine": "all-MiniLM-L6-v2 similarity of answer and reference",
    "title facts": "share of the facts the title carries that the answer states",
    "catalogue facts": "share of the facts only the description holds that the answer states",
    "invents numbers": "share of answers with a number found in neither the title nor the reference",
    "repetition": "share of repeated word 3-grams",
    "stops": "share of answers the model ended itself (EOS) before max_new_tokens",
    "loops": "share of answers with a 4-word phrase repeated 3 times or more",
}
REPETITION_NGRAM = 3
WARM_UP_TOKENS = 4
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


# --- Metrics ------------------------------------------------------------------------------------------------


@cache
def _rouge_scorer():
    # rouge-score directly: evaluate.load("rouge") fetches its script from the Hub, and the course runs offline.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the longest common word subsequence, balanced between precision and recall."""
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure


def embedding_cosine(predictions: Sequence[str], references: Sequence[str], embedding_model: str) -> list[float]:
    """Cosine similarity of each answer with its reference under all-MiniLM-L6-v2 (meaning, not wording)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return []
    vectors = load_embeddings(embedding_model).embed_documents([*predictions, *references])
    answers, targets = np.asarray(vectors[: len(predictions)]), np.asarray(vectors[len(predictions) :])
    # The embeddings are normalised, so the dot product is the cosine.
    return [float(value) for value in np.sum(answers * targets, axis=1)]


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers(text: str) -> set[str]:
    """The numbers of a text, thousands separators dropped: "200,000" and "200000" are the same number."""
    return {number.replace(",", "") for number in _NUMBER.findall(text)}


def fact_recall(answer: str, facts: Sequence[str]) -> float:
    """The share of ``facts`` that the answer states; NaN when there are none to state."""
    if not facts:
        return float("nan")
    return sum(states(answer, fact) for fact in facts) / len(facts)


def invents_numbers(answer: str, title: str, reference: str) -> bool:
    """Whether the answer has a number that is in neither the title nor the reference description."""
    return bool(numbers(answer) - numbers(title) - numbers(reference))


def repetition_rate(text: str, n: int = REPETITION_NGRAM) -> float:
    """The share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for a loop."""
    words = text.lower().split()
    ngrams = [tuple(words[index : index + n]) for index in range(len(words) - n + 1)]
    if not ngrams:
        return 0.0
    return 1 - len(set(ngrams)) / len(ngrams)


# --- The comparison run -------------------------------------------------------------------------------------


def evaluation_sets(profile: Profile) -> dict[str, list[dict]]:
    """The demo products, and profile.eval_examples in-index and held-out products (helpers.data.evaluation_samples:
    the same held-out products notebooks 02 and 03 answer)."""
    return evaluation_samples(profile)


@dataclass(frozen=True)
class Comparison:
    answers: pd.DataFrame  # one row per (set, system, product), with every metric
    metrics: pd.DataFrame  # one row per (set, system): mean and 95% interval of each metric
    differences: pd.DataFrame  # one row per (set, effect, metric): paired difference, interval, verdict
    generation_seconds: float


def _answer_rows(set_name: str, system: str, records: list[dict], answers: list[str], finish_reasons: list[str],
                 sources: list[list[str]], seconds: float) -> list[dict]:
    return [
        {
            "set": set_name,
            "system": system,
            "uid": record["uid"],
            "product": record["product"],
            "reference": record["description"],
            "answer": answer,
            "finish reason": finish_reason,
            "sources": " | ".join(titles),
            "latency s": seconds / len(records),
        }
        for record, answer, finish_reason, titles in zip(records, answers, finish_reasons, sources)
    ]


def _run_model(llm: CourseModel, chain, system_names: tuple[str, str], sets: dict[str, list[dict]]) -> list[dict]:
    """Answers of one model without and with retrieval; each set is one batched call, timed."""
    from helpers.prompts import format_prompt

    plain_system, rag_system = system_names
    rows = []
    for set_name, records in sets.items():
        prompts = [format_prompt(record["product"]) for record in records]
        started = time.perf_counter()
        answers = llm.batch(prompts)
        rows += _answer_rows(set_name, plain_system, records, answers, [llm.finish_reasons[p] for p in prompts],
                             [[] for _ in records], time.perf_counter() - started)
        started = time.perf_counter()
        results = chain.batch([record["product"] for record in records])
        rows += _answer_rows(set_name, rag_system, records, [result["answer"] for result in results],
                             [llm.finish_reasons[result["prompt"]] for result in results],
                             [[document.metadata["title"] for document in result["sources"]] for result in results],
                             time.perf_counter() - started)
    return rows


def run_comparison(profile: Profile, store, sets: dict[str, list[dict]] | None = None) -> Comparison:
    """Generate every system's answers for every set (batched), score them and save the comparison files."""
    from helpers.models import generate, load_model
    from helpers.prompts import format_prompt
    from helpers.training import ensure_adapter

    sets = sets or evaluation_sets(profile)
    adapter_dir = ensure_adapter(profile)  # before the clock starts: a missing adapter is trained here
    started = time.perf_counter()
    rows = []
    for adapter, system_names in ((None, SYSTEMS[0::2]), (adapter_dir, SYSTEMS[1::2])):
        model, tokenizer = load_model(profile, adapter_dir=adapter)
        # The first generate after loading pays one-off set-up costs; keep them out of the first set's latency.
        generate(model, tokenizer, [format_prompt(DEMO_PRODUCTS[0])], profile, max_new_tokens=WARM_UP_TOKENS,
                 progress=False)
        llm = CourseModel(model, tokenizer, profile, progress=True)
        rows += _run_model(llm, rag_chain(retriever(store, profile), llm, profile.context_words), system_names, sets)
    generation_seconds = time.perf_counter() - started
    answers = score_answers(pd.DataFrame(rows), profile.embedding_model)
    comparison = Comparison(answers=answers, metrics=metrics_table(answers, profile.seed),
                            differences=paired_differences(answers, profile.seed),
                            generation_seconds=generation_seconds)
    save_comparison(comparison)
    return comparison


def score_answers(answers: pd.DataFrame, embedding_model: str, facts: dict | None = None) -> pd.DataFrame:
    """Every metric of every answer; the facts are the sample's (helpers.synthetic.load_facts) unless given."""
    facts = load_facts() if facts is None else facts
    no_facts = {"title_facts": (), "catalogue_facts": ()}
    scored = answers.copy()
    rows = list(scored.itertuples(index=False))
    scored["ROUGE-L"] = [rouge_l(row.answer, row.reference) for row in rows]
    scored["cosine"] = embedding_cosine(list(scored["answer"]), list(scored["reference"]), embedding_model)
    scored["title facts"] = [fact_recall(row.answer, facts.get(row.uid, no_facts)["title_facts"]) for row in rows]
    scored["catalogue facts"] = [fact_recall(row.answer, facts.get(row.uid, no_facts)["catalogue_facts"])
                                 for row in rows]
    scored["invents numbers"] = [float(invents_numbers(row.answer, row.product, row.reference)) for row in rows]
    scored["repetition"] = [repetition_rate(row.answer) for row in rows]
    scored["stops"] = [float(reason == "stop") for reason in scored["finish reason"]]
    scored["loops"] = [float(any(mode.startswith("loops") for mode in failure_modes(row.product, row.answer)))
                       for row in rows]
    return scored


# --- Intervals ------------------------------------------------------------------------------------------------


def bootstrap_interval(values: Sequence[float], seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of ``values`` (NaN ignored), resampling with ``seed``."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def metrics_table(scored: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per (set, system): each metric's mean and its 95% bootstrap interval (columns "<metric>", "<metric> low",
    "<metric> high"), the mean latency and the number of products; in the course's order."""
    rows = {}
    for (set_name, system), group in scored.groupby(["set", "system"], sort=False):
        row = {}
        for metric in METRICS:
            values = group[metric].astype(float)
            row[metric] = values.mean()
            row[f"{metric} low"], row[f"{metric} high"] = bootstrap_interval(values, seed)
        row["latency s"] = group["latency s"].mean()
        row["products"] = len(group)
        rows[(set_name, system)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["set", "system"])
    order = [key for key in pd.MultiIndex.from_product([SETS, SYSTEMS]) if key in table.index]
    return table.reindex(order)


def with_intervals(metrics: pd.DataFrame, sets: Sequence[str] = SCORED_SETS, precision: int = 2) -> pd.DataFrame:
    """The scored sets' metrics as "mean [low, high]" strings, one column per metric."""
    table = metrics.loc[[key for key in metrics.index if key[0] in sets]]
    return pd.DataFrame({
        metric: [f"{row[metric]:.{precision}f} [{row[f'{metric} low']:.{precision}f}, {row[f'{metric} high']:.{precision}f}]"
                 if not np.isnan(row[metric]) else "n/a" for _, row in table.iterrows()]
        for metric in METRICS
    }, index=table.index)


EFFECTS = {
    "fine-tuning, without retrieval": ("foundation", "fine-tuned"),
    "fine-tuning, with retrieval": ("RAG (base)", "RAG (fine-tuned)"),
    "retrieval, on the base model": ("foundation", "RAG (base)"),
    "retrieval, on the fine-tuned model": ("fine-tuned", "RAG (fine-tuned)"),
}


def verdict(low: float, high: float, higher_is_better: bool) -> str:
    """"better" or "worse" only when the interval of the difference excludes zero."""
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "no clear difference"


# The systems without a trained adapter: their answers were identical on both CPUs measured (CROSS_RUN_MARGIN).
UNTRAINED_SYSTEMS = ("foundation", "RAG (base)")


def cross_run_margin(before: str, after: str) -> float:
    """How far from zero an interval's ends must lie for its verdict to be checked: no margin between untrained
    systems, CROSS_RUN_MARGIN where a fine-tuned system takes part."""
    return 0.0 if before in UNTRAINED_SYSTEMS and after in UNTRAINED_SYSTEMS else CROSS_RUN_MARGIN


def checked_verdict(low: float, high: float, higher_is_better: bool, margin: float) -> str:
    """The verdict nbval checks: the 95% verdict when both ends of the interval, as printed (two decimals), lie
    more than ``margin`` from zero, else NOT_STABLE. Both ends, because "no clear difference" flips too when an end
    near zero crosses it."""
    if margin == 0 or np.isnan(low) or np.isnan(high):
        return verdict(low, high, higher_is_better)
    if min(abs(round(low, 2)), abs(round(high, 2))) <= margin:
        return NOT_STABLE
    return verdict(low, high, higher_is_better)


def paired_differences(scored: pd.DataFrame, seed: int, sets: Sequence[str] = SCORED_SETS) -> pd.DataFrame:
    """For each scored set, effect and metric: the mean of (after - before) over the same products, its 95% paired
    bootstrap interval, the verdict it supports, and the verdict checked across runs (checked_verdict)."""
    rows = []
    for set_name in sets:
        in_set = scored[scored["set"] == set_name]
        for effect, (before, after) in EFFECTS.items():
            pair = in_set[in_set["system"] == before].merge(in_set[in_set["system"] == after], on="uid",
                                                             suffixes=(" before", " after"))
            for metric, higher_is_better in METRICS.items():
                difference = (pair[f"{metric} after"].astype(float) - pair[f"{metric} before"].astype(float)).to_numpy()
                low, high = bootstrap_interval(difference, seed)
                margin = cross_run_margin(before, after)
                rows.append({"set": set_name, "effect": effect, "before": before, "after": after, "metric": metric,
                             "difference": float(np.nanmean(difference)) if np.any(~np.isnan(difference)) else np.nan,
                             "low": low, "high": high, "verdict": verdict(low, high, higher_is_better),
                             "margin": margin, "checked verdict": checked_verdict(low, high, higher_is_better, margin)})
    return pd.DataFrame(rows)


def verdict_table(differences: pd.DataFrame) -> pd.DataFrame:
    """One row per (set, effect), one column per metric, each cell the checked verdict: what nbval checks exactly."""
    table = differences.pivot_table(index=["set", "effect"], columns="metric", values="checked verdict", aggfunc="first",
                                     sort=False)
    return table.reindex(columns=list(METRICS))


def differences_with_intervals(differences: pd.DataFrame, precision: int = 2) -> pd.DataFrame:
    """The paired differences as "+0.21 [+0.17, +0.25]" strings, one column per metric."""
    cells = differences.assign(cell=[
        f"{row.difference:+.{precision}f} [{row.low:+.{precision}f}, {row.high:+.{precision}f}]"
        if not np.isnan(row.difference) else "n/a" for row in differences.itertuples()])
    return cells.pivot_table(index=["set", "effect"], columns="metric", values="cell", aggfunc="first",
                             sort=False).reindex(columns=list(METRICS))


# --- The fine-tune's targets ------------------------------------------------------------------------------------

TARGET_STOP_RATE = 0.90
TARGET_LOOP_RATE = 0.10
TARGET_ROUGE_RATIO = 2.0


def fine_tune_targets(metrics: pd.DataFrame, differences: pd.DataFrame, set_name: str = "held-out",
                      margin: float = CROSS_RUN_MARGIN) -> pd.DataFrame:
    """What the fine-tune must reach on held-out products: stop by itself, not loop, and at least twice the
    foundation model's ROUGE-L with the interval of the difference above zero. The "result" is "met" or "missed"
    only where the measured number lies at least ``margin`` on one side of its line, else NOT_STABLE."""
    tuned, base = metrics.loc[(set_name, "fine-tuned")], metrics.loc[(set_name, "foundation")]
    rouge = differences[(differences["set"] == set_name) & (differences["effect"] == "fine-tuning, without retrieval")
                        & (differences["metric"] == "ROUGE-L")].iloc[0]
    ratio = tuned["ROUGE-L"] / base["ROUGE-L"] if base["ROUGE-L"] > 0 else np.inf
    # How far each number lies on the right side of its line, in its own units (shares and ROUGE-L alike).
    rows = [
        ("fine-tuned answers that stop by themselves", f"{tuned['stops']:.0%}", f"≥ {TARGET_STOP_RATE:.0%}",
         tuned["stops"] - TARGET_STOP_RATE),
        ("fine-tuned answers that loop", f"{tuned['loops']:.0%}", f"≤ {TARGET_LOOP_RATE:.0%}",
         TARGET_LOOP_RATE - tuned["loops"]),
        ("ROUGE-L, fine-tuned ÷ foundation", f"{ratio:.1f}×", f"≥ {TARGET_ROUGE_RATIO:.0f}×",
         tuned["ROUGE-L"] - TARGET_ROUGE_RATIO * base["ROUGE-L"]),
    ]
    results = [clears(room, margin, yes="met", no="missed") for *_, room in rows]
    # The interval's target is its checked verdict, read with the same rule as every other interval.
    rows.append(("ROUGE-L, fine-tuned − foundation (95% interval)", f"[{rouge['low']:+.2f}, {rouge['high']:+.2f}]",
                 "above 0", None))
    results.append({"better": "met", NOT_STABLE: NOT_STABLE}.get(rouge["checked verdict"], "missed"))
    table = pd.DataFrame([(target, measured, required, result) for (target, measured, required, _), result
                          in zip(rows, results)], columns=["target", "measured", "required", "result"])
    return table.set_index("target")


# --- Presenting it ------------------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame, precision: int = 3) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which the course does not install)."""
    flat = table.reset_index()
    cells = [[f"{value:.{precision}f}" if isinstance(value, float) else str(value) for value in row]
             for row in flat.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def comparison_chart(metrics: pd.DataFrame):
    """One panel per metric: the scored sets on the x axis, one bar per system with its 95% interval."""
    from helpers.data import shown_figure

    columns = 4
    rows = -(-len(METRICS) // columns)
    figure = shown_figure()(figsize=(4.2 * columns, 3.4 * rows))
    axes = figure.subplots(rows, columns).ravel()
    width = 0.8 / len(SYSTEMS)
    for axis, (metric, higher_is_better) in zip(axes, METRICS.items()):
        for offset, system in enumerate(SYSTEMS):
            values = metrics.xs(system, level="system").reindex(SCORED_SETS)
            positions = np.arange(len(SCORED_SETS)) + (offset - (len(SYSTEMS) - 1) / 2) * width
            errors = np.vstack([values[metric] - values[f"{metric} low"], values[f"{metric} high"] - values[metric]])
            axis.bar(positions, values[metric], width, yerr=errors, capsize=2, label=system)
        axis.set_xticks(range(len(SCORED_SETS)), SCORED_SETS)
        axis.set_title(f"{metric} ({'higher' if higher_is_better else 'lower'} is better)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(SYSTEMS), frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def save_comparison(comparison: Comparison) -> None:
    outputs = paths().outputs
    outputs.mkdir(parents=True, exist_ok=True)
    comparison.metrics.to_csv(outputs / "comparison.csv", float_format="%.4f")
    (outputs / "comparison.md").write_text(markdown_table(with_intervals(comparison.metrics)))
    comparison_chart(comparison.metrics).savefig(outputs / "comparison.png", dpi=120, bbox_inches="tight")
    paths().tables.mkdir(parents=True, exist_ok=True)
    comparison.answers.to_csv(paths().tables / "comparison_answers.csv", index=False)
    comparison.differences.to_csv(paths().tables / "comparison_differences.csv", index=False, float_format="%.4f")


def demo_side_by_side(answers: pd.DataFrame) -> pd.DataFrame:
    """The reference solution's table: the demo products × the real description and each system's answer."""
    demo = answers[answers["set"] == "demo"]
    table = demo.pivot(index="product", columns="system", values="answer").reindex(index=list(DEMO_PRODUCTS),
                                                                                     columns=list(SYSTEMS))
    table.insert(0, "reference", demo.drop_duplicates("product").set_index("product")["reference"])
    return table


def held_out_side_by_side(answers: pd.DataFrame, products: int) -> pd.DataFrame:
    """The first ``products`` held-out products: the real description and each system's answer."""
    held_out = answers[answers["set"] == "held-out"]
    titles = list(dict.fromkeys(held_out["product"]))[:products]
    table = held_out.pivot(index="product", columns="system", values="answer").reindex(index=titles,
                                                                                         columns=list(SYSTEMS))
    table.insert(0, "reference", held_out.drop_duplicates("product").set_index("product")["reference"])
    return table


def styled_side_by_side(table: pd.DataFrame, uuid: str = "side_by_side"):
    return styled_text_table(table, uuid=uuid)


def latency_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per answer, one column per system."""
    return metrics["latency s"].unstack("system").reindex(index=list(SETS), columns=list(SYSTEMS)).round(2)


# --- The verdict, derived from the intervals -----------------------------------------------------------------


def conclusions(differences: pd.DataFrame) -> list[str]:
    """For each scored set and effect: the metrics it makes better, worse, or leaves without a clear difference."""
    lines = []
    for set_name in [name for name in SCORED_SETS if name in set(differences["set"])]:
        lines.append(f"{set_name} products:")
        in_set = differences[differences["set"] == set_name]
        for effect in EFFECTS:
            verdicts = in_set[in_set["effect"] == effect].set_index("metric")["checked verdict"]
            parts = [f"{label}: {', '.join(verdicts.index[verdicts == label]) or '-'}"
                     for label in ("better", "worse", "no clear difference", NOT_STABLE)]
            lines.append(f"  {effect:<34} " + " | ".join(parts))
    return lines


def _metric_list(metrics: Sequence[str]) -> str:
    metrics = list(metrics)
    return metrics[0] if len(metrics) == 1 else ", ".join(metrics[:-1]) + " and " + metrics[-1]


def written_conclusion(differences: pd.DataFrame, targets: pd.DataFrame) -> str:
    """The notebook's closing paragraph, every clause read off the checked verdicts and the targets' results:
    what is not stable across runs is counted, not claimed."""
    sentences = []
    for set_name in [name for name in SCORED_SETS if name in set(differences["set"])]:
        in_set = differences[differences["set"] == set_name]
        for effect in EFFECTS:
            verdicts = in_set[in_set["effect"] == effect].set_index("metric")["checked verdict"]
            better, worse = list(verdicts.index[verdicts == "better"]), list(verdicts.index[verdicts == "worse"])
            unclear = list(verdicts.index[verdicts == "no clear difference"])
            if not (better or worse or unclear):
                continue
            parts = ([f"makes {_metric_list(better)} better"] if better else []) + \
                    ([f"makes {_metric_list(worse)} worse"] if worse else [])
            clause = f"On {set_name} products, {effect} " + " and ".join(parts)
            if unclear:
                clause += ("; " if parts else "") + f"makes no clear difference on {_metric_list(unclear)}"
            sentences.append(clause + ".")
    unstable = int((differences["checked verdict"] == NOT_STABLE).sum())
    if unstable:
        sentences.append(f"{unstable} of the {len(differences)} comparisons are {NOT_STABLE} (an end of their "
                         f"interval lies within {CROSS_RUN_MARGIN:.2f} of zero) and are not claimed.")
    return " ".join(sentences + [targets_sentence(targets["result"])])


def targets_sentence(results: pd.Series) -> str:
    met, missed = list(results.index[results == "met"]), list(results.index[results == "missed"])
    unstable = list(results.index[results == NOT_STABLE])
    if len(met) == len(results):
        return "The fine-tune meets all its targets on held-out products."
    sentence = f"On held-out products the fine-tune meets {len(met)} of its {len(results)} targets"
    if missed:
        sentence += f", misses {_metric_list(missed)}"
    if unstable:
        sentence += f"; {_metric_list(unstable)}: {NOT_STABLE}, not claimed"
    return sentence + "."
