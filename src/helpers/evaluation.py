"""Metrics, the four-system comparison, its table, chart and derived conclusion.

Four systems (foundation, fine-tuned, RAG on the base model, RAG on the fine-tuned model) answer three sets of
products: the four demo products of the reference solution, products that are in the index, and held-out products
that were neither trained on nor indexed. Each answer is scored against the product's real description.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from helpers.config import DEMO_PRODUCTS, Profile, paths
from helpers.retrieval import CourseModel, load_embeddings, rag_chain, retriever, styled_text_table

SYSTEMS = ("foundation", "fine-tuned", "RAG (base)", "RAG (fine-tuned)")
SETS = ("demo", "in-index", "held-out")
# Metric column → True when higher is better.
METRICS = {
    "ROUGE-L": True,
    "cosine": True,
    "fact score": True,
    "repetition": False,
    "latency s": False,
}
REPETITION_NGRAM = 3
WARM_UP_TOKENS = 4


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
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _strip_possessive(word: str) -> str:
    return re.sub(r"['’]s$", "", word)


def facts(text: str) -> set[str]:
    """The checkable facts of a text: its numbers and its proper names, lower-cased.

    A proper name is a capitalised word that does not open a sentence ("Judith", "Kerr" in "A book by Judith
    Kerr."): a sentence's first word is capitalised whatever it is.
    """
    numbers = set(_NUMBER.findall(text))
    names = set()
    for sentence in _SENTENCE_END.split(text):
        words = _WORD.findall(sentence)
        names.update(_strip_possessive(word).lower() for word in words[1:] if word[0].isupper())
    return numbers | names


def fact_score(answer: str, reference: str) -> float | None:
    """The share of the reference's numbers and proper names that the answer mentions; None if it has none."""
    reference_facts = facts(reference)
    if not reference_facts:
        return None
    answer_words = {_strip_possessive(word).lower() for word in _WORD.findall(answer)} | set(_NUMBER.findall(answer))
    return len(reference_facts & answer_words) / len(reference_facts)


def repetition_rate(text: str, n: int = REPETITION_NGRAM) -> float:
    """The share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for a loop."""
    words = text.lower().split()
    ngrams = [tuple(words[index : index + n]) for index in range(len(words) - n + 1)]
    if not ngrams:
        return 0.0
    return 1 - len(set(ngrams)) / len(ngrams)


# --- The comparison run -------------------------------------------------------------------------------------


def _records_by_title(dataset, titles: Sequence[str]) -> list[dict]:
    first_by_title = {}
    for record in dataset:
        first_by_title.setdefault(record["product"], record)
    missing = [title for title in titles if title not in first_by_title]
    if missing:
        raise ValueError(f"demo products missing from the training records: {missing}")
    return [first_by_title[title] for title in titles]


def evaluation_sets(profile: Profile) -> dict[str, list[dict]]:
    """The demo products, profile.eval_examples indexed products and as many held-out ones, drawn with the seed."""
    from helpers.data import load_processed

    train, held_out = load_processed(profile)
    demo = _records_by_title(train, DEMO_PRODUCTS)
    not_demo = train.filter(lambda record: record["product"] not in DEMO_PRODUCTS)
    in_index = not_demo.shuffle(seed=profile.seed).select(range(min(profile.eval_examples, len(not_demo))))
    held_out = held_out.shuffle(seed=profile.seed).select(range(min(profile.eval_examples, len(held_out))))
    return {"demo": demo, "in-index": list(in_index), "held-out": list(held_out)}


@dataclass(frozen=True)
class Comparison:
    answers: pd.DataFrame  # one row per (set, system, product)
    metrics: pd.DataFrame  # one row per (set, system), one column per metric
    generation_seconds: float


def _answer_rows(set_name: str, system: str, records: list[dict], answers: list[str], sources: list[list[str]],
                 seconds: float) -> list[dict]:
    return [
        {
            "set": set_name,
            "system": system,
            "uid": record["uid"],
            "product": record["product"],
            "reference": record["description"],
            "answer": answer,
            "sources": " | ".join(titles),
            "latency s": seconds / len(records),
        }
        for record, answer, titles in zip(records, answers, sources)
    ]


def _run_model(llm: CourseModel, chain, system_names: tuple[str, str], sets: dict[str, list[dict]]) -> list[dict]:
    """Answers of one model without and with retrieval; each set is one batched call, timed."""
    from helpers.prompts import format_prompt

    plain_system, rag_system = system_names
    rows = []
    for set_name, records in sets.items():
        products = [record["product"] for record in records]
        started = time.perf_counter()
        answers = llm.batch([format_prompt(product) for product in products])
        rows += _answer_rows(set_name, plain_system, records, answers, [[] for _ in records],
                             time.perf_counter() - started)
        started = time.perf_counter()
        results = chain.batch(products)
        rows += _answer_rows(set_name, rag_system, records, [result["answer"] for result in results],
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
        generate(model, tokenizer, [format_prompt(DEMO_PRODUCTS[0])], profile, max_new_tokens=WARM_UP_TOKENS, progress=False)
        llm = CourseModel(model, tokenizer, profile, progress=True)
        rows += _run_model(llm, rag_chain(retriever(store, profile), llm), system_names, sets)
    generation_seconds = time.perf_counter() - started
    answers = score_answers(pd.DataFrame(rows), profile.embedding_model)
    comparison = Comparison(answers=answers, metrics=metrics_table(answers), generation_seconds=generation_seconds)
    save_comparison(comparison)
    return comparison


def score_answers(answers: pd.DataFrame, embedding_model: str) -> pd.DataFrame:
    scored = answers.copy()
    scored["ROUGE-L"] = [rouge_l(answer, reference) for answer, reference in zip(scored["answer"], scored["reference"])]
    scored["cosine"] = embedding_cosine(list(scored["answer"]), list(scored["reference"]), embedding_model)
    scored["fact score"] = [fact_score(answer, reference) for answer, reference in zip(scored["answer"], scored["reference"])]
    scored["repetition"] = [repetition_rate(answer) for answer in scored["answer"]]
    return scored


def metrics_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per (set, system), in the course's order; fact score averages products that have facts."""
    table = scored.groupby(["set", "system"], sort=False)[list(METRICS)].mean()
    table["products"] = scored.groupby(["set", "system"], sort=False).size()
    order = pd.MultiIndex.from_product([SETS, SYSTEMS], names=["set", "system"])
    return table.reindex([key for key in order if key in table.index])


# --- Presenting it ------------------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame, precision: int = 3) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which the course does not install)."""
    flat = table.reset_index()
    cells = [[f"{value:.{precision}f}" if isinstance(value, float) else str(value) for value in row]
             for row in flat.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def comparison_chart(metrics: pd.DataFrame):
    """One panel per metric: sets on the x axis, one bar per system."""
    from helpers.data import shown_figure

    figure = shown_figure()(figsize=(4 * len(METRICS), 3.6))
    axes = figure.subplots(1, len(METRICS))
    for axis, (metric, higher_is_better) in zip(axes, METRICS.items()):
        metrics[metric].unstack("system").reindex(index=SETS, columns=SYSTEMS).plot.bar(ax=axis, rot=0, legend=False)
        axis.set_title(f"{metric} ({'higher' if higher_is_better else 'lower'} is better)")
        axis.set_xlabel("")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(SYSTEMS), frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def save_comparison(comparison: Comparison) -> None:
    outputs = paths().outputs
    outputs.mkdir(parents=True, exist_ok=True)
    comparison.metrics.to_csv(outputs / "comparison.csv", float_format="%.4f")
    (outputs / "comparison.md").write_text(markdown_table(comparison.metrics))
    comparison_chart(comparison.metrics).savefig(outputs / "comparison.png", dpi=120, bbox_inches="tight")
    paths().tables.mkdir(parents=True, exist_ok=True)
    comparison.answers.to_csv(paths().tables / "comparison_answers.csv", index=False)


def _winner_mask(column: pd.Series, higher_is_better: bool) -> pd.Series:
    best = column.groupby(level="set").transform("max" if higher_is_better else "min")
    return column == best


def styled_metrics(metrics: pd.DataFrame):
    """The table with each set's best value of each metric in bold."""
    def bold_winners(column: pd.Series) -> list[str]:
        if column.name not in METRICS:
            return [""] * len(column)
        return ["font-weight: bold" if win else "" for win in _winner_mask(column, METRICS[column.name])]

    # A fixed uuid keeps the HTML identical between executions of the notebook.
    return metrics.style.set_uuid("comparison").format(precision=3).apply(bold_winners, axis=0)


def demo_side_by_side(answers: pd.DataFrame) -> pd.DataFrame:
    """The reference solution's table: the demo products × the real description and each system's answer."""
    demo = answers[answers["set"] == "demo"]
    table = demo.pivot(index="product", columns="system", values="answer").reindex(index=list(DEMO_PRODUCTS),
                                                                                     columns=list(SYSTEMS))
    table.insert(0, "reference", demo.drop_duplicates("product").set_index("product")["reference"])
    return table


def styled_side_by_side(table: pd.DataFrame):
    return styled_text_table(table, uuid="side_by_side")


# --- The verdict, derived from the numbers ------------------------------------------------------------------


def _ranking(metrics: pd.DataFrame, set_name: str, metric: str) -> pd.Series:
    """The systems of one set from best to worst on one metric."""
    return metrics.loc[set_name, metric].dropna().sort_values(ascending=not METRICS[metric])


def _effect(metrics: pd.DataFrame, set_name: str, metric: str, before: str, after: str) -> str:
    change = metrics.loc[(set_name, after), metric] - metrics.loc[(set_name, before), metric]
    if math.isnan(change):
        return f"{metric} n/a"
    improved = change > 0 if METRICS[metric] else change < 0
    verdict = "better" if improved else "same" if change == 0 else "worse"
    return f"{metric} {change:+.3f} ({verdict})"


EFFECTS = {
    "fine-tuning, without retrieval": ("foundation", "fine-tuned"),
    "fine-tuning, with retrieval": ("RAG (base)", "RAG (fine-tuned)"),
    "retrieval, on the base model": ("foundation", "RAG (base)"),
    "retrieval, on the fine-tuned model": ("fine-tuned", "RAG (fine-tuned)"),
}


QUALITY_METRICS = [metric for metric in METRICS if metric != "latency s"]


def quality_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics that reproduce exactly on re-execution (greedy decoding); latency depends on the machine's load."""
    return metrics.drop(columns="latency s")


def latency_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per answer, one column per system."""
    return metrics["latency s"].unstack("system").reindex(index=list(SETS), columns=list(SYSTEMS)).round(2)


def conclusions(metrics: pd.DataFrame) -> list[str]:
    """Which system wins where on answer quality, and what fine-tuning and retrieval each add, read off the table."""
    quality = QUALITY_METRICS
    lines = []
    for set_name in [name for name in SETS if name in metrics.index.get_level_values("set")]:
        lines.append(f"{set_name} products:")
        wins = dict.fromkeys(SYSTEMS, 0)
        for metric in quality:
            ranking = _ranking(metrics, set_name, metric)
            # Ties share the win (all four systems can repeat nothing, for example).
            winners = list(ranking.index[ranking == ranking.iloc[0]])
            others = ranking.drop(winners)
            for system in winners:
                wins[system] += 1
            runner_up = f" (next: {others.index[0]} {others.iloc[0]:.3f})" if len(others) else ""
            lines.append(f"  {metric:<11} best: {' = '.join(winners)} {ranking.iloc[0]:.3f}{runner_up}")
        for label, (before, after) in EFFECTS.items():
            lines.append(f"  {label:<34} " + ", ".join(_effect(metrics, set_name, m, before, after) for m in quality))
        most = max(wins.values())
        leaders = [system for system, count in wins.items() if count == most]
        lines.append(f"  => most quality wins ({most} of {len(quality)}): {' and '.join(leaders)}")
    return lines
