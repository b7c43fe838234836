"""Embeddings, the Chroma store, the retriever and the RAG chain.

Every training product becomes one document ``Product: {title} - Description: {description}`` whose Chroma id is
the product's uid, so indexing twice adds nothing twice (the reference gave each document a random UUID and
duplicated its index on every run). The store is embedded (a folder under outputs/) unless ``$CHROMA_SERVER_URL``
names a Chroma server, in which case the same code talks to it through ``chromadb.HttpClient``.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from langchain_core.documents import Document
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

from helpers.config import Profile, paths
from helpers.quiet import progress as progress_bar
from helpers.quiet import quiet_libraries

CHROMA_SERVER_ENV_VAR = "CHROMA_SERVER_URL"
COLLECTION_NAME = "products"
# Cosine distance on normalised MiniLM vectors: the score is 1 - cosine similarity, comparable across queries.
COLLECTION_CONFIGURATION = {"hnsw": {"space": "cosine"}}
QUERY_KINDS = ("exact title", "lower-cased", "word dropped", "typo")


def document_text(title: str, description: str) -> str:
    return f"Product: {title} - Description: {description}"


def product_documents(records: Iterable[dict]) -> list[Document]:
    """One LangChain Document per processed record (uid, product, description); its id is the product's uid."""
    documents = []
    for line_number, record in enumerate(records, start=1):
        missing = [key for key in ("uid", "product", "description") if not record.get(key)]
        if missing:
            raise ValueError(f"record {line_number} has no {', '.join(missing)}: {record!r:.200}")
        documents.append(
            Document(
                id=str(record["uid"]),
                page_content=document_text(record["product"], record["description"]),
                metadata={"uid": str(record["uid"]), "title": record["product"]},
            )
        )
    return documents


@cache
def load_embeddings(model_path: str):
    """all-MiniLM-L6-v2 through LangChain, normalised so that cosine = dot product; loaded once per process."""
    quiet_libraries()
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model_name=model_path,
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )


def chroma_settings():
    import chromadb.config

    return chromadb.config.Settings(anonymized_telemetry=False)


def chroma_client(persist_directory: Path):
    """A client for $CHROMA_SERVER_URL if it is set, else the embedded store persisted in ``persist_directory``."""
    quiet_libraries()
    import chromadb

    server_url = os.environ.get(CHROMA_SERVER_ENV_VAR, "").strip()
    if server_url:
        parsed = urlparse(server_url)
        if not parsed.hostname or parsed.scheme not in ("http", "https"):
            raise ValueError(f"{CHROMA_SERVER_ENV_VAR}={server_url!r}: expected a URL like http://127.0.0.1:8001.")
        return chromadb.HttpClient(
            host=parsed.hostname,
            port=parsed.port or (443 if parsed.scheme == "https" else 80),
            ssl=parsed.scheme == "https",
            settings=chroma_settings(),
        )
    persist_directory.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(persist_directory), settings=chroma_settings())


def index_directory(profile: Profile) -> Path:
    return paths().chroma / profile.name


def open_store(profile: Profile, persist_directory: Path | None = None, collection_name: str = COLLECTION_NAME):
    """The product collection (created empty if missing) with our embeddings, never Chroma's downloading default."""
    from langchain_chroma import Chroma

    return Chroma(
        collection_name=collection_name,
        embedding_function=load_embeddings(profile.embedding_model),
        client=chroma_client(persist_directory or index_directory(profile)),
        collection_configuration=COLLECTION_CONFIGURATION,
    )


def document_count(store) -> int:
    return store._collection.count()


@dataclass(frozen=True)
class IndexReport:
    added: int
    already_present: int
    total: int

    def __str__(self) -> str:
        return f"added {self.added:,} documents, {self.already_present:,} already present, {self.total:,} in the index"


def ids_in_store(store, ids: Sequence[str], batch_size: int) -> set[str]:
    """Which of ``ids`` the store already holds, asked ``batch_size`` ids at a time."""
    present = set()
    for start in range(0, len(ids), batch_size):
        present.update(store.get(ids=list(ids[start : start + batch_size]), include=[])["ids"])
    return present


def index_documents(store, documents: Sequence[Document], batch_size: int, progress: bool = True) -> IndexReport:
    """Embed and add the documents whose ids are not in the store yet, ``batch_size`` at a time, shortest first.

    sentence-transformers pads every call to its longest text; batches of unsorted documents made embedding 21%
    slower than one call over all texts (measured on the sample), while batches of similar length cost the same.
    """
    present = ids_in_store(store, [document.id for document in documents], batch_size)
    new_documents = sorted((document for document in documents if document.id not in present),
                           key=lambda document: len(document.page_content))
    batches = range(0, len(new_documents), batch_size)
    for start in progress_bar(batches, desc="indexing", unit="batch", disable=not progress):
        batch = new_documents[start : start + batch_size]
        store.add_documents(batch, ids=[document.id for document in batch])
    return IndexReport(added=len(new_documents), already_present=len(documents) - len(new_documents),
                       total=document_count(store))


def ensure_index(profile: Profile, progress: bool = True):
    """The store holding exactly the training products: missing ones are indexed, stale ones removed.

    Stale documents (products that the current split no longer trains on) would let retrieval see held-out
    descriptions, so they are deleted, and the deletion is reported. A complete index costs one id listing.
    """
    from helpers.data import load_processed

    train, _ = load_processed(profile)
    store = open_store(profile)
    train_ids = set(train["uid"])
    stale_ids = sorted(set(store.get(include=[])["ids"]) - train_ids)
    if stale_ids:
        store.delete(ids=stale_ids)
        print(f"removed {len(stale_ids):,} documents that are not training products")
    if document_count(store) < len(train_ids):
        print(index_documents(store, product_documents(train), profile.index_batch_size, progress=progress))
    return store


def retriever(store, profile: Profile):
    return store.as_retriever(search_kwargs={"k": profile.retriever_k})


def top_matches(store, query: str, k: int) -> pd.DataFrame:
    """The k nearest documents with their cosine distance, as a table for the notebook."""
    hits = store.similarity_search_with_score(query, k=k)
    return pd.DataFrame(
        {
            "rank": range(1, len(hits) + 1),
            "title": [document.metadata["title"] for document, _ in hits],
            "cosine distance": [round(score, 4) for _, score in hits],
        }
    ).set_index("rank")


# --- Retrieval quality ---------------------------------------------------------------------------------------


def _swappable_positions(word: str) -> list[int]:
    # Swapping the two l's of "Ballet" changes nothing: only neighbours that differ make a typo.
    return [index for index in range(len(word) - 1) if word[index] != word[index + 1]]


def _typo(word: str, rng: random.Random) -> str:
    """Swap two neighbouring letters, the most common typing slip."""
    position = rng.choice(_swappable_positions(word))
    return word[:position] + word[position + 1] + word[position] + word[position + 2 :]


def perturbed_queries(title: str, seed: int) -> dict[str, str]:
    """The title as a user might type it: exact, lower-cased, with one word dropped, with one typo.

    The random choices are seeded by (seed, title), so every run and every machine asks the same questions.
    """
    rng = random.Random(f"{seed}:{title}")
    words = title.split()
    dropped = words[:]
    if len(words) > 1:
        del dropped[rng.randrange(len(words))]
    typo_candidates = [
        index for index, word in enumerate(words) if len(word) >= 4 and word.isalpha() and _swappable_positions(word)
    ]
    with_typo = words[:]
    if typo_candidates:
        index = rng.choice(typo_candidates)
        with_typo[index] = _typo(words[index], rng)
    return {
        "exact title": title,
        "lower-cased": title.lower(),
        "word dropped": " ".join(dropped),
        "typo": " ".join(with_typo),
    }


def retrieval_hits(store, records: Iterable[dict], k: int, seed: int) -> pd.DataFrame:
    """One row per (product, query kind): the query, the rank of the product's own document (NaN if not in top k)
    and the title that came first."""
    queries = [(record, kind, query) for record in records
               for kind, query in perturbed_queries(record["product"], seed).items()]
    # One batched embedding call for all queries; MiniLM embeds queries and documents the same way.
    vectors = store.embeddings.embed_documents([query for _, _, query in queries])
    rows = []
    for (record, kind, query), vector in zip(queries, vectors):
        retrieved = store.similarity_search_by_vector(vector, k=k)
        retrieved_uids = [document.metadata["uid"] for document in retrieved]
        uid = str(record["uid"])
        rows.append({
            "uid": uid,
            "query kind": kind,
            "query": query,
            "rank": retrieved_uids.index(uid) + 1 if uid in retrieved_uids else None,
            "first result": retrieved[0].metadata["title"] if retrieved else None,
        })
    return pd.DataFrame(rows).astype({"rank": "Int64"})


HIT_RATE_DECIMALS = 2


def hit_rates(hits: pd.DataFrame, k_values: Sequence[int] = (1, 3)) -> pd.DataFrame:
    """hit@k per query kind: the share of products whose own document is among the first k results."""
    by_kind = hits.groupby("query kind", sort=False)["rank"]
    # A product missing from the top k has no rank: it counts as a miss, not as a gap in the mean.
    table = pd.DataFrame(
        {f"hit@{k}": by_kind.apply(lambda ranks, k=k: (ranks <= k).fillna(False).astype(bool).mean()) for k in k_values}
    )
    table["queries"] = by_kind.size()
    # Two decimals: Chroma's HNSW search is approximate, and rebuilding the index can move one query in a few
    # thousand across the k boundary (a 0.0004 change) without any change in retrieval quality worth reading.
    return table.reindex(QUERY_KINDS).round(HIT_RATE_DECIMALS)


def retrieval_quality(store, records: Iterable[dict], seed: int, k_values: Sequence[int] = (1, 3)) -> pd.DataFrame:
    return hit_rates(retrieval_hits(store, records, k=max(k_values), seed=seed), k_values)


# --- The RAG chain ------------------------------------------------------------------------------------------


class CourseModel(Runnable[str, str]):
    """The course's model as a LangChain Runnable: prompt text in, answer text out.

    ``invoke`` answers one prompt; ``batch`` sends all prompts to ``helpers.models.generate`` at once (left-padded
    batched generation) instead of LangChain's default of one thread per prompt.
    """

    def __init__(self, model, tokenizer, profile: Profile, progress: bool = False) -> None:
        self.model, self.tokenizer, self.profile, self.progress = model, tokenizer, profile, progress

    def invoke(self, input: str, config=None, **kwargs: Any) -> str:
        return self.batch([input], config)[0]

    def batch(self, inputs: list[str], config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list[str]:
        from helpers.models import generate

        if not inputs:
            return []
        return generate(self.model, self.tokenizer, list(inputs), self.profile, progress=self.progress)


class _AddAnswers(Runnable[dict, dict]):
    """The chain's last step: asks the model about every prompt of the batch at once and keeps the sources."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def invoke(self, input: dict, config=None, **kwargs: Any) -> dict:
        return self.batch([input], config)[0]

    def batch(self, inputs: list[dict], config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list[dict]:
        answers = self.llm.batch([item["prompt"] for item in inputs], config) if inputs else []
        return [{**item, "answer": answer} for item, answer in zip(inputs, answers)]


def format_context(documents: Sequence[Document]) -> str:
    return "\n".join(document.page_content for document in documents)


def _with_prompt(item: dict) -> dict:
    from helpers.prompts import format_prompt

    return {**item, "prompt": format_prompt(item["product"], context=format_context(item["sources"]))}


def rag_chain(retriever, llm):
    """product title → {product, sources, prompt, answer}: retrieve, fill the Alpaca prompt, generate.

    ``llm`` is any Runnable from prompt text to answer text (``CourseModel`` or a fake one in tests).
    """
    return RunnableParallel(product=RunnablePassthrough(), sources=retriever) | RunnableLambda(_with_prompt) | _AddAnswers(llm)


def sources_table(result: dict) -> pd.DataFrame:
    """The documents a RAG answer was built from, for display beside the answer."""
    return pd.DataFrame(
        {
            "rank": range(1, len(result["sources"]) + 1),
            "source title": [document.metadata["title"] for document in result["sources"]],
            "uid": [document.metadata["uid"] for document in result["sources"]],
        }
    ).set_index("rank")


def rag_answers_table(results_by_model: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per product: the titles it retrieved, then each model's answer built from them."""
    first = next(iter(results_by_model.values()))
    table = pd.DataFrame(
        {"retrieved sources": ["\n".join(document.metadata["title"] for document in result["sources"]) for result in first]},
        index=pd.Index([result["product"] for result in first], name="product"),
    )
    for model_name, results in results_by_model.items():
        if [result["product"] for result in results] != list(table.index):
            raise ValueError(f"{model_name}: answers are not for the same products in the same order")
        table[f"answer ({model_name})"] = [result["answer"] for result in results]
    return table


def styled_text_table(table: pd.DataFrame, uuid: str):
    """Long texts wrapped and top-aligned; a fixed uuid keeps the HTML identical between executions."""
    return table.style.set_uuid(uuid).set_properties(
        **{"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"}
    )
