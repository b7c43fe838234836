"""The comparison: what each system gets right about a product, against the simplest things that need no model.

Four systems answer three sets of products (the four demo products, products in the index that were not trained
on, and held-out products that are neither trained on nor indexed), and two baselines answer without any model:

| system | model | prompt |
|---|---|---|
| foundation | base SmolLM2 | the title alone |
| fine-tuned | base + LoRA (notebook 03) | the title alone: the reference's exercise |
| RAG (ungated) | base + LoRA | the top retrieved record presented as the product's, other results beside it |
| grounded | base + LoRA | the record whose title is the product's when retrieval found one, else "no record" |
| copy the top record | none | the description of the first retrieved record, as it is |
| title only | none | the title, as it is |

Every answer is scored on its facts first (helpers.facts: right, contradicting the record, invented, taken from
a retrieved neighbour), then on whether it ends and loops, then on its similarity to the reference's wording
(ROUGE-L, cosine): the sample's descriptions share templates, so wording rewards a fluent neighbour.

Statistics: every mean has a 95% percentile bootstrap interval over products, and every comparison of two systems a
paired one (scipy.stats.bootstrap, paired=True). Percentile rather than BCa: most fact metrics are shares of 0/1
answers, and where two systems agree on every product BCa's acceleration is undefined (scipy returns NaN); the
percentile interval is then [0, 0], which is right. The comparisons the conclusion rests on are a small family
named before any run (PRIMARY), corrected together for multiplicity (Benjamini–Hochberg on bootstrap p-values,
scipy.stats.false_discovery_control); every other comparison is shown as exploratory and claimed nowhere. No verdict
is given on fewer than MIN_PRODUCTS products. What nbval checks is the verdict that survives a retraining: where a
trained system takes part, an interval with an end within helpers.config.CROSS_RUN_MARGIN of zero is "not stable
across runs", and a target within its margin of its line likewise (helpers.config.TARGET_MARGINS).
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.stats

from helpers.config import (CROSS_RUN_MARGIN, DEMO_PRODUCTS, NOT_STABLE, TARGET_MARGINS, Profile, clears, display_path,
                            paths)
from helpers.data import evaluation_samples
from helpers.facts import FactScore, describe, score_facts
from helpers.display import markdown_table
from helpers.embeddings import load_embeddings
from helpers.synthetic import load_facts

if TYPE_CHECKING:
    from helpers.retrieval import CourseModel

# The statistics below import no model library: `import helpers.evaluation` for bootstrap_interval or the promotion
# decision does not load Unsloth, torch or transformers (tests/test_imports.py). The functions that answer with the
# systems or embed their answers import helpers.models or helpers.retrieval where they run: those stages load the
# models, Unsloth first.

SYSTEMS = ("foundation", "fine-tuned", "RAG (ungated)", "grounded")
BASELINES = ("copy the top record", "title only")
TRAINED = ("fine-tuned", "RAG (ungated)", "grounded")
SHOWN = (*BASELINES, *SYSTEMS)  # the order of every table: the baselines first, the bar to clear
SETS = ("demo", "in-index", "held-out")
SCORED_SETS = ("in-index", "held-out")
# Metric → (higher is better, what it measures, group). Shares of answers unless said otherwise.
METRIC_INFO = {
    "fact precision": (True, "of the values an answer states, the share its product's record holds (answers stating "
                             "none left out)", "facts"),
    "title facts": (True, "share of the facts the title carries that the answer states", "facts"),
    "catalogue facts": (True, "share of the facts only the record's description holds that the answer states",
                        "facts"),
    "contradicts": (False, "answers stating a value that conflicts with the record (36 pieces → 120)", "facts"),
    "invents": (False, "answers stating a specific the record does not hold (contradictions included)", "facts"),
    "neighbour facts": (False, "answers stating a value of a retrieved neighbour that the product does not have",
                        "facts"),
    "stops": (True, "answers the model ended itself (EOS) before max_new_tokens", "form"),
    "loops": (False, "answers with a 4-word phrase repeated 3 times or more", "form"),
    "ROUGE-L": (True, "similarity to the reference's wording: longest common word subsequence (F1)", "wording"),
    "cosine": (True, "similarity to the reference's wording: all-MiniLM-L6-v2 cosine", "wording"),
}
METRICS = {metric: info[0] for metric, info in METRIC_INFO.items()}
METRIC_DESCRIPTIONS = {metric: info[1] for metric, info in METRIC_INFO.items()}
METRIC_GROUPS = {group: [metric for metric, info in METRIC_INFO.items() if info[2] == group]
                 for group in ("facts", "form", "wording")}
FACT_METRICS = tuple(METRIC_GROUPS["facts"])
README_METRICS = (*FACT_METRICS, "stops", "loops")  # outputs/comparison.md, which the README quotes

# Each effect compares two systems on the same products: after − before.
EFFECTS = {
    "fine-tuning": ("foundation", "fine-tuned"),
    "retrieval without a gate": ("fine-tuned", "RAG (ungated)"),
    "the gate": ("RAG (ungated)", "grounded"),
    "grounded vs copying the top record": ("copy the top record", "grounded"),
    "grounded vs the title alone": ("title only", "grounded"),
}
# The comparisons the conclusion rests on, named before any run: corrected together for multiplicity. Every other
# comparison is exploratory.
PRIMARY = (
    ("held-out", "the gate", "invents"),
    ("held-out", "the gate", "contradicts"),
    ("held-out", "the gate", "neighbour facts"),
    ("held-out", "grounded vs the title alone", "title facts"),
    ("held-out", "grounded vs the title alone", "invents"),
    ("in-index", "grounded vs copying the top record", "catalogue facts"),
    ("in-index", "grounded vs copying the top record", "fact precision"),
    ("in-index", "the gate", "catalogue facts"),
)
FALSE_DISCOVERY_RATE = 0.05
MIN_PRODUCTS = 30  # fewer products than this: no verdict ("too few products"), as on the lab profile
TOO_FEW = "too few products"
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
WARM_UP_TOKENS = 4


# --- What goes wrong: failure modes named from the answers themselves -----------------------------------------

LOOP_NGRAM_WORDS = 4
LOOP_MIN_REPEATS = 3
GENERIC_PHRASES = re.compile(r"\b(?:the|this|a) (?:product|item)\b", re.IGNORECASE)
TITLE_STOPWORDS = {"the", "of", "and", "for", "with", "a", "an", "in", "on", "to", "by", "from", "book"}


def repeated_ngram(answer: str, words: int = LOOP_NGRAM_WORDS) -> tuple[str, int]:
    """The most repeated run of `words` words and how often it occurs."""
    tokens = re.findall(r"\w+", answer.lower())
    counts = Counter(" ".join(tokens[i:i + words]) for i in range(len(tokens) - words + 1))
    return counts.most_common(1)[0] if counts else ("", 0)


def title_words(product: str) -> set[str]:
    return {word for word in re.findall(r"\w+", product.lower()) if word not in TITLE_STOPWORDS and len(word) > 2}


def failure_modes(product: str, answer: str, stopped: bool | None = None) -> list[str]:
    """The failure modes visible in one answer, each detected by a rule on the text, not judged by hand.

    ``stopped`` is whether the model wrote EOS (Answer.stopped). Without it, an answer that does not end like a
    sentence is taken as cut off at max_new_tokens, a rule of thumb.
    """
    modes = []
    if not answer.strip():
        return ["empty answer"]
    phrase, repeats = repeated_ngram(answer)
    if repeats >= LOOP_MIN_REPEATS:
        modes.append(f'loops ("{phrase}" ×{repeats})')
    if "###" in answer or "instruction" in answer.lower():
        modes.append("writes new prompt sections")
    if GENERIC_PHRASES.search(answer):
        modes.append('generic ("the product")')
    if not title_words(product) & set(re.findall(r"\w+", answer.lower())):
        modes.append("never names the product")
    if stopped is False or (stopped is None and answer.rstrip()[-1] not in ".!?\"')"):
        modes.append(NO_STOP)
    return modes


NO_STOP = "runs to max_new_tokens"


INVENTS, CONTRADICTS = "invents specifics", "contradicts the record"


def _texts_and_stops(answers: list) -> tuple[list[str], list[bool | None]]:
    return ([getattr(answer, "text", answer) for answer in answers],
            [getattr(answer, "stopped", None) for answer in answers])


def _fact_scores(records: list[dict], texts: list[str]) -> list[FactScore | None]:
    """Each answer's facts against its product's record (helpers.facts); None where the sample holds no record."""
    facts = load_facts()
    return [score_facts(text, facts[record["uid"]], record["product"], record.get("description", ""))
            if record.get("uid") in facts else None for record, text in zip(records, texts)]


def _all_failure_modes(record: dict, text: str, stopped: bool | None, score: FactScore | None) -> list[str]:
    modes = failure_modes(record["product"], text, stopped)
    if score is not None:
        modes += [mode for mode, present in ((CONTRADICTS, score.contradicts), (INVENTS, score.invents)) if present]
    return modes


def failure_mode_table(records: list[dict], answers: list, name: str | None = None) -> pd.DataFrame:
    """Product, answer, the failure modes found in it (rules on the text, and its facts against the product's
    record: helpers.facts) and what it got right or wrong; saved to outputs/tables/<name>.csv when named.

    ``records`` are evaluation records (uid, product, description); ``answers`` Answers (generate_answers) or strings.
    """
    texts, stops = _texts_and_stops(answers)
    scores = _fact_scores(records, texts)
    table = pd.DataFrame({
        "product": [record["product"] for record in records],
        "answer": texts,
        "failure modes": ["; ".join(_all_failure_modes(record, text, stopped, score)) or "none found"
                          for record, text, stopped, score in zip(records, texts, stops, scores)],
        "facts": [describe(score) if score is not None else "no record to check" for score in scores],
    })
    if name:
        paths().tables.mkdir(parents=True, exist_ok=True)
        table.to_csv(paths().tables / f"{name}.csv", index=False)
    return table


def failure_mode_counts(records: list[dict], answers: list) -> pd.DataFrame:
    """How many answers show each failure mode (loop phrases pooled into one "loops" row), and their share."""
    texts, stops = _texts_and_stops(answers)
    scores = _fact_scores(records, texts)
    counts = Counter(mode.split(" (")[0] for record, text, stopped, score in zip(records, texts, stops, scores)
                     for mode in _all_failure_modes(record, text, stopped, score))
    table = pd.DataFrame({"answers": counts}, dtype=int).sort_values("answers", ascending=False)
    table["share"] = (table["answers"] / len(answers)).map("{:.0%}".format)
    return table.rename_axis("failure mode")


# What the notebooks' text says of the held-out answers, as thresholds that hold on every machine: nbval checks
# whether each holds, not the exact counts (generated text may differ between CPUs whose arithmetic differs).
# Each failure mode → (bound, threshold, margin). The base model's answers reproduce on every CPU measured: no margin.
# The fine-tune's shares move between trainings: the margins of helpers.config.TARGET_MARGINS (running to
# max_new_tokens is the complement of stopping).
FOUNDATION_EXPECTED = {NO_STOP: ("at least", 0.5, 0.0), "loops": ("at least", 0.2, 0.0)}
FINE_TUNED_EXPECTED = {
    NO_STOP: ("at most", 0.10, TARGET_MARGINS[("held-out", "fine-tuned", "stops")]),
    "loops": ("at most", 0.10, TARGET_MARGINS[("held-out", "fine-tuned", "loops")]),
    INVENTS: ("at least", 0.5, TARGET_MARGINS[("held-out", "fine-tuned", "invents")]),
}


def expectations_table(counts: pd.DataFrame, total: int, expected: dict[str, tuple[str, float, float]]) -> pd.DataFrame:
    """Whether each failure mode's share of ``total`` answers is at least / at most its threshold: "yes" or "no"
    when the share lies at least the mode's margin on one side of it, else NOT_STABLE."""
    rows = []
    for mode, (bound, threshold, margin) in expected.items():
        share = counts["answers"].get(mode, 0) / total
        room = share - threshold if bound == "at least" else threshold - share
        rows.append({"failure mode": mode, "required share": f"{bound} {threshold:.0%}", "margin": margin,
                     "holds": clears(room, margin, yes="yes", no="no")})
    return pd.DataFrame(rows).set_index("failure mode")


def baseline_counts_path(profile: Profile) -> Path:
    return paths().tables / f"failure_counts_foundation_heldout_{profile.name}.json"


def save_baseline_counts(counts: pd.DataFrame, records: list[dict], profile: Profile) -> Path:
    """Notebook 02's failure counts on the held-out products: the baseline notebooks 03 and 06 report against."""
    path = baseline_counts_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"products": [record["uid"] for record in records],
                                "counts": counts["answers"].to_dict()}, indent=1) + "\n")
    return path


def ensure_baseline_counts(profile: Profile, records: list[dict]) -> dict[str, int]:
    """The foundation model's failure counts on these held-out products: notebook 02's, or computed here (the
    base model answers them) when 02 has not run or ran on other products."""
    path = baseline_counts_path(profile)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["products"] == [record["uid"] for record in records]:
            return saved["counts"]
    from helpers.models import answer_products, load_model

    print(f"{display_path(path)} is missing or for other products: the foundation model answers them first")
    model, tokenizer = load_model(profile)
    answers = answer_products(model, tokenizer, [record["product"] for record in records], profile)
    counts = failure_mode_counts(records, answers)
    save_baseline_counts(counts, records, profile)
    return counts["answers"].to_dict()


def counts_against_baseline(counts: pd.DataFrame, records: list[dict], profile: Profile, label: str) -> pd.DataFrame:
    """This model's failure counts on the held-out products beside the foundation model's (notebook 02)."""
    baseline = pd.Series(ensure_baseline_counts(profile, records), dtype=int)
    table = pd.DataFrame({"foundation (notebook 02)": baseline, label: counts["answers"]}).fillna(0).astype(int)
    return table.sort_values("foundation (notebook 02)", ascending=False).rename_axis(
        f"failure mode (of {len(records)} held-out answers)")


def metric_descriptions() -> pd.DataFrame:
    """What each metric measures, its group and its direction: the table notebook 06 starts from."""
    return pd.DataFrame([{"metric": metric, "group": group, "better": "higher" if higher else "lower", "meaning": meaning}
                         for metric, (higher, meaning, group) in METRIC_INFO.items()]).set_index("metric")


# --- Wording metrics ----------------------------------------------------------------------------------------


@cache
def _rouge_scorer():
    # rouge-score directly: evaluate.load("rouge") fetches its script from the Hub, and the course runs offline.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the longest common word subsequence, balanced between precision and recall."""
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure


def embedding_cosine(predictions: Sequence[str], references: Sequence[str], embedding_model: str) -> list[float]:
    """Cosine similarity of each answer with its reference under all-MiniLM-L6-v2."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return []
    vectors = load_embeddings(embedding_model).embed_documents([*predictions, *references])
    answers, targets = np.asarray(vectors[: len(predictions)]), np.asarray(vectors[len(predictions) :])
    # The embeddings are normalised, so the dot product is the cosine.
    return [float(value) for value in np.sum(answers * targets, axis=1)]


# --- The comparison run -------------------------------------------------------------------------------------


def evaluation_sets(profile: Profile) -> dict[str, list[dict]]:
    """The demo products, and profile.eval_examples in-index (not trained on) and held-out products
    (helpers.data.evaluation_samples: the same held-out products notebooks 02 and 03 answer)."""
    return evaluation_samples(profile)


@dataclass(frozen=True)
class Comparison:
    answers: pd.DataFrame  # one row per (set, system, product), with every metric
    metrics: pd.DataFrame  # one row per (set, system): mean, 95% interval and n of each metric
    differences: pd.DataFrame  # one row per (set, effect, metric): paired difference, interval, p, verdicts
    generation_seconds: float


def _uids(documents: Sequence) -> str:
    return " ".join(document.metadata["uid"] for document in documents)


def _rows(set_name: str, system: str, records: list[dict], answers: list[str], finish_reasons: list[str | None],
          sources: list[list], retrieved: dict[str, list], seconds: float) -> list[dict]:
    """One row per answer: what the system was given ("sources") and what retrieval returns for the title
    ("retrieved uids", the same for every system: the neighbours of the neighbour-fact rate)."""
    return [{"set": set_name, "system": system, "uid": record["uid"], "product": record["product"],
             "reference": record["description"], "answer": answer, "finish reason": reason,
             "sources": " | ".join(document.metadata["title"] for document in found),
             "retrieved uids": _uids(retrieved[record["product"]]),
             "latency s": seconds / len(records) if seconds else np.nan}
            for record, answer, reason, found in zip(records, answers, finish_reasons, sources)]


def _generate_unique(llm: CourseModel, prompts: list[str]) -> dict[str, str]:
    """Each distinct prompt answered once (greedy decoding gives a prompt one answer): where the gate keeps the top
    record, the grounded prompt is the ungated one."""
    unique = list(dict.fromkeys(prompts))
    return dict(zip(unique, llm.batch(unique)))


def _answer_with_model(llm: CourseModel, steps: dict[str, object], sets: dict[str, list[dict]],
                       retrieved: dict[str, list], systems: dict[str, str]) -> list[dict]:
    """The rows of the systems one model answers: "plain" ones get the title alone, the others their retrieval
    step's prompt. Each set is one batched call per system kind, timed."""
    from helpers.prompts import format_prompt

    rows = []
    for set_name, records in sets.items():
        titles = [record["product"] for record in records]
        prompts = {system: ([format_prompt(title) for title in titles] if kind == "plain"
                            else [item["prompt"] for item in steps[kind].batch(titles)])
                   for system, kind in systems.items()}
        started = time.perf_counter()
        answers = _generate_unique(llm, [prompt for system_prompts in prompts.values() for prompt in system_prompts])
        seconds = (time.perf_counter() - started) / len(systems)
        for system, system_prompts in prompts.items():
            rows += _rows(set_name, system, records, [answers[prompt] for prompt in system_prompts],
                          [llm.finish_reasons[prompt] for prompt in system_prompts],
                          [[] if systems[system] == "plain" else retrieved[title] for title in titles], retrieved,
                          seconds)
    return rows


def baseline_rows(sets: dict[str, list[dict]], retrieved: dict[str, list], descriptions: dict[str, str]) -> list[dict]:
    """The answers that need no model: the first retrieved record's description, and the title itself."""
    rows = []
    for set_name, records in sets.items():
        top = [retrieved[record["product"]][:1] for record in records]
        copied = [descriptions[found[0].metadata["uid"]] if found else "" for found in top]
        rows += _rows(set_name, "copy the top record", records, copied, [None] * len(records), top, retrieved, 0.0)
        rows += _rows(set_name, "title only", records, [record["product"] for record in records],
                      [None] * len(records), [[] for _ in records], retrieved, 0.0)
    return rows


def run_comparison(profile: Profile, store, sets: dict[str, list[dict]] | None = None, adapter_dir=None,
                   save: bool = True) -> Comparison:
    """Generate every system's answers for every set (batched), add the baselines, score them all and save the
    comparison files (unless ``save`` is False). The adapter is the profile's (ensure_adapter) unless given."""
    from helpers.data import load_processed
    from helpers.models import generate, load_model
    from helpers.prompts import format_prompt
    from helpers.retrieval import CourseModel, retrieval_step, retriever
    from helpers.training.adapter import ensure_adapter

    sets = sets or evaluation_sets(profile)
    adapter_dir = adapter_dir or ensure_adapter(profile)  # before the clock starts: a missing one is trained here
    search = retriever(store, profile)
    titles = [record["product"] for records in sets.values() for record in records]
    retrieved = dict(zip(titles, search.batch(titles)))
    steps = {"ungated": retrieval_step(search, profile.context_words, gated=False),
             "gated": retrieval_step(search, profile.context_words, gated=True)}
    started = time.perf_counter()
    rows = []
    for adapter, systems in ((None, {"foundation": "plain"}),
                             (adapter_dir, {"fine-tuned": "plain", "RAG (ungated)": "ungated", "grounded": "gated"})):
        model, tokenizer = load_model(profile, adapter_dir=adapter)
        # The first generate after loading pays one-off set-up costs; keep them out of the first set's latency.
        generate(model, tokenizer, [format_prompt(DEMO_PRODUCTS[0])], profile, max_new_tokens=WARM_UP_TOKENS,
                 progress=False)
        rows += _answer_with_model(CourseModel(model, tokenizer, profile, progress=True), steps, sets, retrieved,
                                   systems)
    generation_seconds = time.perf_counter() - started
    train, _ = load_processed(profile)
    rows += baseline_rows(sets, retrieved, dict(zip(train["uid"], train["description"])))
    answers = score_answers(pd.DataFrame(rows), profile.embedding_model)
    comparison = Comparison(answers=answers, metrics=metrics_table(answers, profile.seed),
                            differences=paired_differences(answers, profile.seed),
                            generation_seconds=generation_seconds)
    if save:
        save_comparison(comparison)
    return comparison


def fact_scores(answers: pd.DataFrame, facts: dict | None = None) -> list[FactScore | None]:
    """Each answer's FactScore against its product's record (None without a record: data without facts). The
    neighbours are the records retrieval returns for the product's title ("retrieved uids"), its own excluded."""
    facts = load_facts() if facts is None else facts
    scores = []
    for row in answers.to_dict("records"):
        record = facts.get(row["uid"])
        if record is None:
            scores.append(None)
            continue
        others = [facts.get(uid, ()) for uid in str(row.get("retrieved uids") or "").split() if uid != row["uid"]]
        scores.append(score_facts(row["answer"], record, row["product"], row["reference"], others))
    return scores


def score_answers(answers: pd.DataFrame, embedding_model: str, facts: dict | None = None) -> pd.DataFrame:
    """Every metric of every answer. Fact metrics are NaN for a product without facts; form metrics are NaN for a
    baseline (nothing was generated)."""
    scored = answers.copy()
    scores = fact_scores(scored, facts)
    rows = list(scored.itertuples(index=False))

    def per_answer(value) -> list[float]:
        return [float(value(score)) if score is not None else np.nan for score in scores]

    scored["fact precision"] = per_answer(lambda score: score.fact_precision)
    scored["title facts"] = per_answer(lambda score: score.title_fact_recall)
    scored["catalogue facts"] = per_answer(lambda score: score.catalogue_fact_recall)
    scored["contradicts"] = per_answer(lambda score: score.contradicts)
    scored["invents"] = per_answer(lambda score: score.invents)
    scored["neighbour facts"] = per_answer(lambda score: score.takes_from_neighbours)
    scored["facts"] = [describe(score) if score is not None else "" for score in scores]
    generated = scored["system"].isin(SYSTEMS)
    scored["stops"] = np.where(generated, (scored["finish reason"] == "stop").astype(float), np.nan)
    scored["loops"] = [float(any(mode.startswith("loops") for mode in failure_modes(row.product, row.answer)))
                       if row.system in SYSTEMS else np.nan for row in rows]
    scored["ROUGE-L"] = [rouge_l(row.answer, row.reference) for row in rows]
    scored["cosine"] = embedding_cosine(list(scored["answer"]), list(scored["reference"]), embedding_model)
    return scored


# --- Intervals ------------------------------------------------------------------------------------------------


def _present(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[~np.isnan(values)]


def bootstrap_interval(values: Sequence[float], seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of ``values`` (NaN left out), resampled with ``seed``."""
    values = _present(values)
    if len(values) < 2:
        return float("nan"), float("nan")
    result = scipy.stats.bootstrap((values,), np.mean, vectorized=True, n_resamples=resamples,
                                   confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class PairedInterval:
    mean: float
    low: float
    high: float
    p_value: float  # two-sided bootstrap p-value for "no difference"
    n: int


def paired_interval(before: Sequence[float], after: Sequence[float], seed: int,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> PairedInterval:
    """The mean of after − before over the products where both are defined, its 95% paired percentile bootstrap
    interval (the products resampled as pairs) and a two-sided bootstrap p-value."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    both = ~np.isnan(before) & ~np.isnan(after)
    before, after = before[both], after[both]
    if len(before) < 2:
        return PairedInterval(float("nan"), float("nan"), float("nan"), float("nan"), len(before))
    result = scipy.stats.bootstrap((before, after), lambda b, a, axis: np.mean(a - b, axis=axis), paired=True,
                                   vectorized=True, n_resamples=resamples, confidence_level=CONFIDENCE,
                                   method="percentile", rng=np.random.default_rng(seed))
    means = result.bootstrap_distribution
    tail = min(np.sum(means <= 0), np.sum(means >= 0))
    p_value = min(1.0, 2 * (tail + 1) / (len(means) + 1))
    return PairedInterval(float(np.mean(after - before)), float(result.confidence_interval.low),
                          float(result.confidence_interval.high), p_value, len(before))


def metrics_table(scored: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per (set, system): each metric's mean, its 95% bootstrap interval and its n (columns "<metric>",
    "<metric> low", "<metric> high", "<metric> n"), and the mean latency; in the course's order."""
    rows = {}
    for (set_name, system), group in scored.groupby(["set", "system"], sort=False):
        row = {}
        for metric in METRICS:
            values = _present(group[metric])
            row[metric] = values.mean() if len(values) else np.nan
            row[f"{metric} low"], row[f"{metric} high"] = bootstrap_interval(values, seed)
            row[f"{metric} n"] = len(values)
        row["latency s"] = group["latency s"].mean() if "latency s" in group else np.nan  # not in saved fixtures
        row["products"] = len(group)
        rows[(set_name, system)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["set", "system"])
    order = [key for key in pd.MultiIndex.from_product([SETS, SHOWN]) if key in table.index]
    return table.reindex(order)


def interval_text(mean: float, low: float, high: float, precision: int = 2, signed: bool = False) -> str:
    """ "0.21 [0.17, 0.25]" (signed: "+0.21 [+0.17, +0.25]"), or "n/a" where the interval is undefined."""
    if np.isnan(low):
        return "n/a"
    spec = f"{'+' if signed else ''}.{precision}f"
    return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


def with_intervals(metrics: pd.DataFrame, metrics_shown: Sequence[str] = tuple(METRICS),
                   sets: Sequence[str] = SCORED_SETS, precision: int = 2) -> pd.DataFrame:
    """The scored sets' metrics as "mean [low, high]" strings, one column per metric ("n/a" where undefined)."""
    table = metrics.loc[[key for key in metrics.index if key[0] in sets]]
    return pd.DataFrame({
        metric: [interval_text(row[metric], row[f"{metric} low"], row[f"{metric} high"], precision)
                 for _, row in table.iterrows()]
        for metric in metrics_shown
    }, index=table.index)


def sample_sizes(metrics: pd.DataFrame, sets: Sequence[str] = SCORED_SETS) -> pd.DataFrame:
    """How many answers each mean is over: fact metrics leave out products with nothing of that kind to state."""
    table = metrics.loc[[key for key in metrics.index if key[0] in sets], [f"{metric} n" for metric in METRICS]]
    return table.rename(columns=lambda column: column.removesuffix(" n")).astype(int)


# --- Verdicts ------------------------------------------------------------------------------------------------


def verdict(low: float, high: float, higher_is_better: bool) -> str:
    """"better" or "worse" only when the interval of the difference excludes zero."""
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "no clear difference"


def cross_run_margin(before: str, after: str) -> float:
    """How far from zero an interval's ends must lie for its verdict to be checked: none between systems without a
    trained adapter (their answers reproduce: the base model's on every CPU measured, the baselines' always),
    CROSS_RUN_MARGIN where a fine-tuned system takes part."""
    return CROSS_RUN_MARGIN if before in TRAINED or after in TRAINED else 0.0


def checked_verdict(low: float, high: float, higher_is_better: bool, margin: float, significant: bool = True) -> str:
    """The verdict nbval checks: NOT_STABLE when an end of the interval, as printed (two decimals), lies within
    ``margin`` of zero; otherwise the verdict, "better"/"worse" only where ``significant`` (the family's
    correction) agrees. Both ends, because "no clear difference" flips too when an end near zero crosses it."""
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    if margin and min(abs(round(low, 2)), abs(round(high, 2))) <= margin:
        return NOT_STABLE
    said = verdict(low, high, higher_is_better)
    return said if significant or said == "no clear difference" else "no clear difference"


def paired_differences(scored: pd.DataFrame, seed: int, sets: Sequence[str] = SCORED_SETS) -> pd.DataFrame:
    """For each scored set, effect and metric: the mean of (after − before) over the same products, its 95% paired
    bootstrap interval, p-value and n; "verdict" (the 95% interval's), "family" (primary or exploratory), the
    primary family's Benjamini–Hochberg adjusted p, and the "checked verdict" nbval checks."""
    rows = []
    for set_name in sets:
        in_set = scored[scored["set"] == set_name]
        for effect, (before, after) in EFFECTS.items():
            pair = _paired_answers(in_set, before, after)
            for metric, higher_is_better in METRICS.items():
                interval = paired_interval(pair[f"{metric} before"], pair[f"{metric} after"], seed)
                rows.append({"set": set_name, "effect": effect, "before": before, "after": after, "metric": metric,
                             "difference": interval.mean, "low": interval.low, "high": interval.high,
                             "p": interval.p_value, "n": interval.n,
                             "verdict": verdict(interval.low, interval.high, higher_is_better),
                             "family": "primary" if (set_name, effect, metric) in PRIMARY else "exploratory",
                             "margin": cross_run_margin(before, after)})
    differences = pd.DataFrame(rows)
    return with_checked_verdicts(differences)


def _paired_answers(in_set: pd.DataFrame, before: str, after: str) -> pd.DataFrame:
    """The two systems' answers to the same products, side by side (columns "<metric> before", "<metric> after")."""
    return in_set[in_set["system"] == before].merge(in_set[in_set["system"] == after], on="uid",
                                                    suffixes=(" before", " after"))


def against_baselines(scored: pd.DataFrame, seed: int, metrics_shown: Sequence[str] = FACT_METRICS,
                      sets: Sequence[str] = SCORED_SETS, precision: int = 2) -> pd.DataFrame:
    """Every system against each no-model baseline: system − baseline over the same products, its 95% paired
    interval and the interval's verdict, as "+0.21 [+0.17, +0.25] better". Exploratory: no correction, no margin,
    claimed nowhere; where a system does not beat a baseline is as plain here as where it does."""
    rows = []
    for set_name in sets:
        in_set = scored[scored["set"] == set_name]
        for system in SYSTEMS:
            for baseline in BASELINES:
                pair = _paired_answers(in_set, baseline, system)
                row = {"set": set_name, "system": system, "against": baseline}
                for metric in metrics_shown:
                    interval = paired_interval(pair[f"{metric} before"], pair[f"{metric} after"], seed)
                    said = (TOO_FEW if interval.n < MIN_PRODUCTS
                            else verdict(interval.low, interval.high, METRICS[metric]))
                    text = interval_text(interval.mean, interval.low, interval.high, precision, signed=True)
                    row[metric] = text if text == "n/a" else f"{text} {said}"
                rows.append(row)
    return pd.DataFrame(rows).set_index(["set", "system", "against"])


def with_checked_verdicts(differences: pd.DataFrame) -> pd.DataFrame:
    """The family's adjusted p-values, and the checked verdict of every comparison."""
    differences = differences.copy()
    primary = (differences["family"] == "primary") & differences["p"].notna()
    differences["adjusted p"] = np.nan
    if primary.any():
        differences.loc[primary, "adjusted p"] = scipy.stats.false_discovery_control(differences.loc[primary, "p"])
    checked = []
    for row in differences.to_dict("records"):
        if row["n"] < MIN_PRODUCTS:
            checked.append(TOO_FEW)
            continue
        significant = row["family"] != "primary" or row["adjusted p"] <= FALSE_DISCOVERY_RATE
        checked.append(checked_verdict(row["low"], row["high"], METRICS[row["metric"]], row["margin"], significant))
    differences["checked verdict"] = checked
    return differences


def family_rows(differences: pd.DataFrame, family: str = "primary") -> pd.DataFrame:
    """The comparisons of one family, indexed by (set, effect, metric); the primary family in PRIMARY's order."""
    chosen = differences[differences["family"] == family].set_index(["set", "effect", "metric"])
    return chosen.reindex([key for key in PRIMARY if key in chosen.index]) if family == "primary" else chosen


def verdict_table(differences: pd.DataFrame, family: str = "primary") -> pd.DataFrame:
    """The checked verdicts of one family: one row per (set, effect, metric). What nbval checks exactly."""
    return family_rows(differences, family)[["checked verdict"]]


def differences_with_intervals(differences: pd.DataFrame, metrics_shown: Sequence[str] = tuple(METRICS),
                               precision: int = 2) -> pd.DataFrame:
    """The paired differences as "+0.21 [+0.17, +0.25]" strings, one row per (set, effect), one column per metric;
    the primary family's cells marked "*", and a difference over fewer than MIN_PRODUCTS products says so."""
    cells = differences.assign(cell=[
        (interval_text(row.difference, row.low, row.high, precision, signed=True)
         + ("*" if row.family == "primary" else "")
         + (f" (n={row.n}: {TOO_FEW})" if row.n < MIN_PRODUCTS else "")) if not np.isnan(row.low) else "n/a"
        for row in differences.itertuples()])
    return cells.pivot_table(index=["set", "effect"], columns="metric", values="cell", aggfunc="first",
                             sort=False).reindex(columns=list(metrics_shown))


def primary_table(differences: pd.DataFrame, precision: int = 2) -> pd.DataFrame:
    """The primary family in full: difference, interval, p, adjusted p, n and both verdicts."""
    chosen = family_rows(differences)
    table = chosen[["difference", "low", "high", "p", "adjusted p", "n", "verdict", "checked verdict"]].copy()
    for column in ("difference", "low", "high"):
        table[column] = table[column].map(lambda value: f"{value:+.{precision}f}")
    table["p"] = table["p"].map("{:.4f}".format)
    table["adjusted p"] = table["adjusted p"].map("{:.4f}".format)
    return table


# --- Targets --------------------------------------------------------------------------------------------------

# (set, system, metric) → (bound, line): what the course's systems must reach.
TARGETS = {
    ("held-out", "grounded", "invents"): ("at most", 0.10),
    ("held-out", "grounded", "contradicts"): ("at most", 0.05),
    ("held-out", "grounded", "title facts"): ("at least", 0.80),
    ("held-out", "grounded", "stops"): ("at least", 0.90),
    ("held-out", "grounded", "loops"): ("at most", 0.10),
    ("in-index", "grounded", "catalogue facts"): ("at least", 0.90),
    ("in-index", "grounded", "fact precision"): ("at least", 0.95),
    ("held-out", "fine-tuned", "stops"): ("at least", 0.90),
    ("held-out", "fine-tuned", "loops"): ("at most", 0.10),
}


def targets_table(metrics: pd.DataFrame, differences: pd.DataFrame, answers: pd.DataFrame,
                  margins: dict = TARGET_MARGINS) -> pd.DataFrame:
    """Every target with its measured value and 95% interval, its margin, and its result: "met" or "missed" only
    where the number lies at least its margin on one side of its line (a trained system's numbers move between runs:
    helpers.config.TARGET_MARGINS), else NOT_STABLE; "too few products" under MIN_PRODUCTS."""
    rows = []
    for (set_name, system, metric), (bound, line) in TARGETS.items():
        row, margin = metrics.loc[(set_name, system)], margins[(set_name, system, metric)]
        room = row[metric] - line if bound == "at least" else line - row[metric]
        result = TOO_FEW if row[f"{metric} n"] < MIN_PRODUCTS else clears(room, margin, yes="met", no="missed")
        rows.append({"target": f"{set_name}, {system}: {metric} {bound} {line:.2f}",
                     "measured": f"{row[metric]:.2f} [{row[f'{metric} low']:.2f}, {row[f'{metric} high']:.2f}]",
                     "n": int(row[f"{metric} n"]), "margin": margin, "result": result})
    copy = differences[(differences["set"] == "in-index") & (differences["effect"] == "grounded vs copying the top record")
                       & (differences["metric"] == "catalogue facts")].iloc[0]
    margin = margins[("in-index", "grounded", "catalogue facts vs the copy baseline")]
    rows.append({"target": "in-index, grounded: catalogue facts at least the copy baseline's",
                 "measured": f"{copy['difference']:+.2f} [{copy['low']:+.2f}, {copy['high']:+.2f}]",
                 "n": int(copy["n"]), "margin": margin,
                 "result": TOO_FEW if copy["n"] < MIN_PRODUCTS else clears(copy["difference"], margin, "met", "missed")})
    demo = demo_facts_stated(answers)
    rows.append({"target": "demo, grounded: each product states its own record's facts (at least half of its "
                           "catalogue facts, none contradicted)",
                 "measured": f"{int(demo.sum())} of {len(demo)}", "n": len(demo), "margin": 0.0,
                 "result": "met" if len(demo) and demo.all() else "missed"})
    return pd.DataFrame(rows).set_index("target")


def demo_facts_stated(answers: pd.DataFrame, system: str = "grounded") -> pd.Series:
    """For each demo product: whether the system's answer states its own record's facts, not a neighbour's: at
    least half of the record's catalogue facts, and none contradicted."""
    demo = answers[(answers["set"] == "demo") & (answers["system"] == system)].set_index("product")
    return ((demo["catalogue facts"] >= 0.5) & (demo["contradicts"] == 0.0)).reindex(list(DEMO_PRODUCTS))


# --- Presenting it ------------------------------------------------------------------------------------------


def forest_plot(differences: pd.DataFrame, family: str = "primary"):
    """The paired differences of one family as a forest plot: each comparison's mean and 95% interval, zero marked,
    and the band within CROSS_RUN_MARGIN of zero shaded (a verdict there is not stable across runs)."""
    from helpers.display import shown_figure

    chosen = family_rows(differences, family).reset_index().iloc[::-1]  # the first comparison on top
    figure = shown_figure()(figsize=(9, 0.45 * len(chosen) + 1.5))
    axes = figure.subplots()
    positions = np.arange(len(chosen))
    errors = np.vstack([chosen["difference"] - chosen["low"], chosen["high"] - chosen["difference"]])
    axes.errorbar(chosen["difference"], positions, xerr=errors, fmt="o", capsize=3, color="black")
    axes.axvline(0, color="grey", linewidth=1)
    axes.axvspan(-CROSS_RUN_MARGIN, CROSS_RUN_MARGIN, color="grey", alpha=0.15,
                 label=f"within {CROSS_RUN_MARGIN:.2f} of zero: not stable across runs")
    labels = [f"{row.set}: {row.effect} — {row.metric} ({'higher' if METRICS[row.metric] else 'lower'} is better)"
              for row in chosen.itertuples()]
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlabel("difference, after − before (mean and 95% paired bootstrap interval)")
    axes.set_title(f"The {family} comparisons")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def save_comparison(comparison: Comparison) -> None:
    outputs = paths().outputs
    outputs.mkdir(parents=True, exist_ok=True)
    comparison.metrics.to_csv(outputs / "comparison.csv", float_format="%.4f")
    (outputs / "comparison.md").write_text(markdown_table(with_intervals(comparison.metrics, README_METRICS)))
    paths().figures.mkdir(parents=True, exist_ok=True)
    forest_plot(comparison.differences).savefig(paths().figures / "comparison_forest.png", dpi=120,
                                                bbox_inches="tight")
    paths().tables.mkdir(parents=True, exist_ok=True)
    comparison.answers.to_csv(paths().tables / "comparison_answers.csv", index=False)
    comparison.differences.to_csv(paths().tables / "comparison_differences.csv", index=False, float_format="%.4f")


def side_by_side(answers: pd.DataFrame, set_name: str, products: int | None = None,
                 systems: Sequence[str] = SYSTEMS) -> pd.DataFrame:
    """Products of one set: the real description, then each system's answer with the facts it got right, wrong
    or from elsewhere."""
    chosen = answers[answers["set"] == set_name]
    titles = list(dict.fromkeys(chosen["product"]))[:products]
    cells = chosen.assign(cell=chosen["answer"] + "\n— " + chosen["facts"])
    table = cells.pivot(index="product", columns="system", values="cell").reindex(index=titles, columns=list(systems))
    table.insert(0, "reference", chosen.drop_duplicates("product").set_index("product")["reference"])
    return table


def latency_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per answer, one column per generating system."""
    return metrics["latency s"].unstack("system").reindex(index=list(SETS), columns=list(SYSTEMS)).round(2)


# --- The conclusion, derived from the checked verdicts and the targets ------------------------------------------


def _listed(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def written_conclusion(differences: pd.DataFrame, targets: pd.DataFrame) -> str:
    """A few sentences, every clause read off the primary family's checked verdicts and the targets' results."""
    primary = family_rows(differences).reset_index()
    sentences = []
    for (set_name, effect), group in primary.groupby(["set", "effect"], sort=False):
        verdicts = group.set_index("metric")["checked verdict"]
        parts = [f"{label} on {_listed(verdicts.index[verdicts == label])}"
                 for label in ("better", "worse", "no clear difference") if (verdicts == label).any()]
        if parts:
            sentences.append(f"{set_name.capitalize()}, {effect}: {'; '.join(parts)}.")
    unclaimed = primary[primary["checked verdict"].isin([NOT_STABLE, TOO_FEW])]
    if len(unclaimed):
        sentences.append(f"{len(unclaimed)} of the {len(primary)} primary comparisons are not claimed "
                         f"({_listed(sorted(set(unclaimed['checked verdict'])))}).")
    results = targets["result"]
    counts = {label: int((results == label).sum()) for label in ("met", "missed", NOT_STABLE, TOO_FEW)}
    summary = f"Targets: {counts['met']} of {len(results)} met"
    if counts["missed"]:
        summary += f"; missed: {_listed(list(results.index[results == 'missed']))}"
    if counts[NOT_STABLE] or counts[TOO_FEW]:
        summary += f"; {counts[NOT_STABLE] + counts[TOO_FEW]} not claimed"
    return " ".join(sentences + [summary + "."])


# --- The service's promotion gate: a new adapter serves only if it is not worse ------------------------------------

# What a shopper would check first, on products no adapter trained on: made-up specifics, contradictions, the title's
# own facts, and answers that end. A candidate may be worse by at most the margin at its interval's worse end
# (non-inferiority). 40 products keep every metric above MIN_PRODUCTS (a few products have no title facts) for about
# a minute and a half of generation on 2 cores; at that size a 95% paired interval is about ±0.15 wide when the two
# adapters' answers differ on a quarter of the products, hence the margin: a candidate whose answers differ more
# must be better to pass, and an instructor can still promote it on purpose.
PROMOTION_METRICS = ("invents", "contradicts", "title facts", "stops")
PROMOTION_MARGIN = 0.15
PROMOTION_PRODUCTS = 40


def promotion_products(profile: Profile, trained_titles: Sequence[str] = ()) -> list[dict]:
    """The fixed set a candidate adapter is checked on: the first held-out evaluation products, less any that the
    job trained on (a correction may name a held-out product), so that none was trained on."""
    trained = set(trained_titles)
    return [record for record in evaluation_samples(profile)["held-out"]
            if record["product"] not in trained][:PROMOTION_PRODUCTS]


def answer_metrics(records: Sequence[dict], answers: Sequence, facts: dict | None = None) -> pd.DataFrame:
    """One row per answer: the promotion metrics (NaN for a product without facts)."""
    facts = load_facts() if facts is None else facts
    rows = []
    for record, answer in zip(records, answers):
        own = facts.get(record["uid"])
        score = score_facts(answer.text, own, record["product"], record.get("description", "")) if own else None
        rows.append({"invents": float(score.invents) if score else np.nan,
                     "contradicts": float(score.contradicts) if score else np.nan,
                     "title facts": score.title_fact_recall if score else np.nan,
                     "stops": float(answer.stopped)})
    return pd.DataFrame(rows, columns=list(PROMOTION_METRICS))


def promotion_check(records: Sequence[dict], serving: Sequence, candidate: Sequence, seed: int,
                    margin: float = PROMOTION_MARGIN, facts: dict | None = None) -> pd.DataFrame:
    """Per metric: the serving and the candidate adapter's means on the same products, the difference (candidate −
    serving) with its 95% paired interval, the interval's worse end and whether it stays within ``margin``
    (non-inferiority). Fewer than MIN_PRODUCTS products with facts: no judgement ("too few products")."""
    before, after = answer_metrics(records, serving, facts), answer_metrics(records, candidate, facts)
    rows = []
    for metric in PROMOTION_METRICS:
        interval = paired_interval(before[metric], after[metric], seed)
        worse_end = -interval.low if METRICS[metric] else interval.high
        judged = interval.n >= MIN_PRODUCTS
        rows.append({"metric": metric, "better": "higher" if METRICS[metric] else "lower", "products": interval.n,
                     "serving": before[metric].mean(),
                     "candidate": after[metric].mean(), "difference": interval.mean, "low": interval.low,
                     "high": interval.high, "worse by at most": worse_end,
                     # rounded as shown: an interval end printed as the margin is within it
                     "verdict": ("not worse" if round(worse_end, 6) <= margin else "worse") if judged else TOO_FEW})
    return pd.DataFrame(rows)


def promotion_decision(check: pd.DataFrame, margin: float = PROMOTION_MARGIN) -> tuple[bool, str]:
    """Promote or not, and why, in one sentence an instructor can act on."""
    too_few = check[check["verdict"] == TOO_FEW]
    if not too_few.empty:
        return False, (f"too few products with facts to judge ({int(too_few['products'].min())} < {MIN_PRODUCTS}): "
                       "it stays a candidate until an instructor promotes it")
    worse = check[check["verdict"] == "worse"]
    if worse.empty:
        return True, f"not worse than the serving adapter by more than {margin:.2f} on any of {', '.join(check['metric'])}"
    reasons = "; ".join(f"{row['metric']} {interval_text(row['difference'], row['low'], row['high'], signed=True)} "
                        f"(worse by up to {row['worse by at most']:.2f})" for row in worse.to_dict("records"))
    return False, f"worse than the serving adapter by more than the margin {margin:.2f}: {reasons}"
