"""Training records: the prompt/completion pairs SFTTrainer trains on, of three kinds.

The title alone; the title with the product's catalogue record among its nearest other products (RAFT-style, the
same search notebook 04's retriever makes); and the title with other products' records only, answered from the
title's facts ("no record"). Imports no Unsloth (a benchmark's plain baseline uses it): a process that also loads
the course model imports helpers.models first, as Unsloth requires.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import datasets
import numpy as np

from helpers.config import Profile
from helpers.data import load_processed, select_training_records
from helpers.embeddings import embed
from helpers.prompts import (Catalogue, catalogue_for, document_text, format_completion, format_prompt,
                             format_training_text, no_record_answer)


def to_training_texts(records: datasets.Dataset, eos_token: str) -> datasets.Dataset:
    """Alpaca text with EOS in a "text" column (the language-modelling form: loss on the prompt too)."""
    return records.map(
        lambda record: {"text": format_training_text(record["product"], record["description"], eos_token)}
    )


def nearest_other_products(queries: datasets.Dataset, pool: datasets.Dataset, profile: Profile,
                           count: int) -> list[list[int]]:
    """For each query record, the pool indices of the ``count`` documents nearest its title, its own excluded.

    The same search the retriever of notebooks 04-06 makes (a title against "Product: … - Description: …"
    documents, cosine on all-MiniLM-L6-v2), done exactly in memory because the index is built after training.
    """
    documents = [document_text(record["product"], record["description"]) for record in pool]
    document_vectors = embed(documents, profile.embedding_model, profile.index_batch_size,
                             description="embedding the products")
    query_vectors = embed(list(queries["product"]), profile.embedding_model, profile.index_batch_size)
    scores = query_vectors @ document_vectors.T
    pool_uids = pool["uid"]
    for row, uid in enumerate(queries["uid"]):
        scores[row, [index for index, pool_uid in enumerate(pool_uids) if pool_uid == uid]] = -np.inf
    return [list(row[:count]) for row in np.argsort(-scores, axis=1, kind="stable")]


TITLE_ONLY, WITH_RECORD, NO_RECORD = "title only", "with its record", "no record"
EXAMPLE_KINDS = (TITLE_ONLY, WITH_RECORD, NO_RECORD)


@dataclass(frozen=True)
class TrainingExamples:
    """The prompt/completion pairs SFTTrainer trains on, the kind of each, and what went into them."""

    dataset: datasets.Dataset  # columns prompt, completion (what SFTTrainer reads)
    kinds: tuple[str, ...]  # the kind of each row (EXAMPLE_KINDS)
    shortened_documents: int

    def count(self, kind: str) -> int:
        return self.kinds.count(kind)

    def example(self, kind: str) -> str:
        """The first example of a kind, as the model sees it: the prompt, then the completion."""
        row = self.dataset[self.kinds.index(kind)]
        return row["prompt"] + row["completion"]

    def show_each_kind(self) -> None:
        """Print one example of each kind present, as the model sees it, under the kind's name."""
        for kind in EXAMPLE_KINDS:
            if self.count(kind):
                print(f"{'=' * 40} {kind} {'=' * 40}\n{self.example(kind)}\n")

    def summary(self) -> str:
        return (f"{len(self.dataset)} prompt/completion examples: {self.count(TITLE_ONLY)} with the title alone (the "
                f"reference's exercise), {self.count(WITH_RECORD)} with the product's catalogue record among other "
                f"products, {self.count(NO_RECORD)} where the catalogue has no record (answer: the title's facts and "
                f"nothing more); {self.shortened_documents} other products' documents shortened (marked …)")


def fits_context(record: dict, profile: Profile) -> bool:
    """Whether a record's description is shown whole in a prompt: the answer can then be learnt from the prompt."""
    return len(record["description"].split()) <= profile.context_words


def example_kinds(records: datasets.Dataset, profile: Profile) -> list[str]:
    """Each record's kind of example, seeded: profile.record_share of them (among those whose document fits the
    prompt whole) with the record, profile.no_record_share with none, the rest with the title alone."""
    rng = random.Random(profile.seed)
    rows = list(range(len(records)))
    fitting = [row for row in rows if fits_context(records[row], profile)]
    with_record = set(rng.sample(fitting, min(len(fitting), round(profile.record_share * len(records)))))
    rest = [row for row in rows if row not in with_record]
    no_record = set(rng.sample(rest, round(profile.no_record_share * len(records))))
    return [WITH_RECORD if row in with_record else NO_RECORD if row in no_record else TITLE_ONLY for row in rows]


def training_examples(records: datasets.Dataset, pool: datasets.Dataset, profile: Profile,
                      eos_token: str) -> TrainingExamples:
    """Prompt/completion pairs in TRL's form, so that the loss falls on the completion (answer + EOS) only.

    Three kinds (example_kinds), each in the layout the course asks at inference (helpers.prompts):
    - the title alone → the description: the reference's exercise (notebook 06's "fine-tuned" system);
    - the title with the product's catalogue record, shown apart from profile.retriever_k - 1 other products that
      retrieval would return beside it (found as the retriever finds them) → the description: the record's facts,
      not a neighbour's (retrieval-augmented fine-tuning with distractors, as in RAFT);
    - the title with the catalogue saying it has no record → the title's facts and nothing more
      (helpers.prompts.no_record_answer): what the model cannot know, it learns not to invent.
    """
    kinds = example_kinds(records, profile)
    with_record = [row for row, kind in enumerate(kinds) if kind == WITH_RECORD]
    neighbours = dict(zip(with_record, nearest_other_products(records.select(with_record), pool, profile,
                                                              profile.retriever_k - 1))) if with_record else {}
    prompts, completions, shortened = [], [], 0
    for row, (record, kind) in enumerate(zip(records, kinds)):
        catalogue, answer = None, record["description"]
        if kind == WITH_RECORD:
            others = [document_text(pool[int(other)]["product"], pool[int(other)]["description"])
                      for other in neighbours[row]]
            catalogue, cut = catalogue_for(record["description"], others, profile.context_words)
            shortened += cut
        elif kind == NO_RECORD:
            catalogue, answer = Catalogue(None), no_record_answer(record["product"])
        prompts.append(format_prompt(record["product"], catalogue))
        completions.append(format_completion(answer, eos_token))
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    return TrainingExamples(dataset, kinds=tuple(kinds), shortened_documents=shortened)


def training_dataset(profile: Profile, tokenizer) -> datasets.Dataset:
    train, _ = load_processed(profile)
    return training_examples(select_training_records(train, profile), train, profile, tokenizer.eos_token).dataset
