"""The Chroma store, the retriever and the RAG chain (the embedding model: helpers.embeddings).

Every training product becomes one document ``Product: {title} - Description: {description}`` with the product's
uid in its metadata. LangChain's indexing API keys each vector by a hash of its content and keeps a record manager of
those keys, so indexing twice adds nothing twice (the reference gave each document a random UUID and duplicated its
index on every run), and a changed description replaces its old vector. The store is embedded (a folder under outputs/) unless ``$CHROMA_SERVER_URL``
names a Chroma server, in which case the same code talks to it through ``chromadb.HttpClient``.
"""
from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from pydantic import ConfigDict, Field
from langchain_core.documents import Document
from langchain_core.language_models.llms import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

import helpers.models  # noqa: F401  (Unsloth first: sentence-transformers imports transformers)
from helpers.config import FACTS_USED_MARGIN, Profile, active_profile, clears, embedding_model_name, paths
from helpers.embeddings import load_embeddings
from helpers.prompts import Catalogue, catalogue_for, document_description, document_text, format_prompt
from helpers.quiet import progress as progress_bar
from helpers.facts import describe, score_facts
from helpers.synthetic import fact_form, load_facts

CHROMA_SERVER_ENV_VAR = "CHROMA_SERVER_URL"
COLLECTION_NAME = "products"
# Cosine distance on normalised MiniLM vectors: the score is 1 - cosine similarity, comparable across queries.
COLLECTION_CONFIGURATION = {"hnsw": {"space": "cosine"}}
QUERY_KINDS = ("exact title", "lower-cased", "word dropped", "typo")
EMBEDDING_MODEL_KEY = "embedding_model"


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


def chroma_settings():
    import chromadb.config

    return chromadb.config.Settings(anonymized_telemetry=False)


def chroma_client(persist_directory: Path):
    """A client for $CHROMA_SERVER_URL if it is set, else the embedded store persisted in ``persist_directory``."""
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


class IndexMismatchError(RuntimeError):
    """The collection holds vectors of another embedding model: mixing them would make every search meaningless."""


def open_store(profile: Profile, persist_directory: Path | None = None, collection_name: str = COLLECTION_NAME):
    """The product collection (created empty if missing) with our embeddings, never Chroma's downloading default.

    The collection records the embedding model it was built with; opening it with another model is refused.
    """
    from langchain_chroma import Chroma

    model_name = embedding_model_name(profile.embedding_model)
    store = Chroma(
        collection_name=collection_name,
        embedding_function=load_embeddings(profile.embedding_model),
        client=chroma_client(persist_directory or index_directory(profile)),
        collection_configuration=COLLECTION_CONFIGURATION,
        collection_metadata={EMBEDDING_MODEL_KEY: model_name},
    )
    check_store_embedding_model(store, model_name)
    return store


def check_store_embedding_model(store, model_name: str) -> None:
    recorded = (store._collection.metadata or {}).get(EMBEDDING_MODEL_KEY)
    if recorded == model_name:
        return
    if document_count(store) == 0:
        # An empty collection made elsewhere (a server, an older course version): claim it for this model.
        store._collection.modify(metadata={**(store._collection.metadata or {}), EMBEDDING_MODEL_KEY: model_name})
        return
    raise IndexMismatchError(
        f"The Chroma collection {store._collection.name!r} holds {document_count(store):,} vectors of "
        f"{recorded or 'an unrecorded embedding model'}, but this profile embeds with {model_name}. Empty it "
        "(helpers.retrieval.reset_index, or `make clean-outputs` for the embedded store) and index again, or use "
        "another collection."
    )


def record_manager_path(persist_directory: Path) -> Path:
    # Beside the Chroma folder, not in it: with a Chroma server nothing is written to the embedded store's folder.
    return persist_directory.with_name(f"{persist_directory.name}-records.sqlite")


def open_record_manager(profile: Profile, persist_directory: Path | None = None,
                        collection_name: str = COLLECTION_NAME):
    """LangChain's SQL record manager: which content hash each product's vector was made from, and when."""
    from langchain_classic.indexes import SQLRecordManager

    database = record_manager_path(persist_directory or index_directory(profile))
    database.parent.mkdir(parents=True, exist_ok=True)
    server = os.environ.get(CHROMA_SERVER_ENV_VAR, "").strip() or "embedded"
    manager = SQLRecordManager(f"chroma/{server}/{collection_name}", db_url=f"sqlite:///{database}")
    manager.create_schema()
    return manager


def open_index(profile: Profile, persist_directory: Path | None = None):
    """(store, record_manager) for the profile's product index."""
    return open_store(profile, persist_directory), open_record_manager(profile, persist_directory)


def reset_index(store, record_manager) -> None:
    """Empty the collection and forget every record, so the next indexing run starts from nothing."""
    store.reset_collection()
    record_manager.delete_keys(record_manager.list_keys())


def document_count(store) -> int:
    return store._collection.count()


def indexed_uids(store, uids: Sequence[str]) -> set[str]:
    """Which product uids have a document in the store (vector ids are content hashes, the uid is metadata)."""
    found = store.get(where={"uid": {"$in": list(uids)}}, include=["metadatas"]) if uids else {"metadatas": []}
    return {metadata["uid"] for metadata in found["metadatas"]}


@dataclass(frozen=True)
class IndexReport:
    added: int
    unchanged: int
    removed: int
    total: int

    def __str__(self) -> str:
        return (f"added {self.added:,} documents, {self.unchanged:,} unchanged, {self.removed:,} removed, "
                f"{self.total:,} in the index")


def index_documents(store, record_manager, documents: Sequence[Document], batch_size: int,
                    progress: bool = True) -> IndexReport:
    """Make the store hold exactly ``documents``, through LangChain's indexing API (``langchain_core.indexing.index``).

    Each document is keyed by a hash of its content and metadata and tracked under its product uid: an unchanged
    document is skipped, a changed description is re-embedded and its old vector deleted, and a product that is no
    longer among ``documents`` is removed (cleanup="full"). New documents go in shortest first: sentence-transformers
    pads every call to its longest text, and batches of similar length embed 21% faster on the sample.
    """
    from langchain_core.indexing import index

    forget_records_of_lost_vectors(store, record_manager)
    ordered = sorted(documents, key=lambda document: len(document.page_content))
    # One bar step per batch that index() has finished, drawn every time: the same lines on every run.
    bar = progress_bar(total=len(ordered), desc="indexing", unit="doc", disable=not progress, mininterval=0)
    try:
        result = index(counted_batches(ordered, batch_size, bar), record_manager, store, cleanup="full",
                       source_id_key="uid", batch_size=batch_size, key_encoder="sha256")
    finally:
        bar.close()
    expected = len({document.page_content for document in documents})
    if document_count(store) != expected:
        raise RuntimeError(f"After indexing, the collection holds {document_count(store):,} vectors for {expected:,} "
                           "distinct documents: another process changed it. Reset the index and run again.")
    changed = result["num_updated"]  # re-indexed under the same key (forced updates only); counted as added
    return IndexReport(added=result["num_added"] + changed, unchanged=result["num_skipped"],
                       removed=result["num_deleted"], total=document_count(store))


def forget_records_of_lost_vectors(store, record_manager) -> None:
    """Start the records afresh when the collection lost vectors they list (its folder deleted, a server reset):
    index() skips every document whose hash is recorded, so the lost ones would never come back."""
    recorded = record_manager.list_keys()
    if len(recorded) > document_count(store):
        record_manager.delete_keys(recorded)


def counted_batches(documents: Sequence[Document], batch_size: int, bar) -> Iterator[Document]:
    """The documents, moving ``bar`` on by a batch when index() comes back for the next one (or the end)."""
    for start in range(0, len(documents), batch_size):
        batch = documents[start : start + batch_size]
        yield from batch
        bar.update(len(batch))


def ensure_index(profile: Profile, progress: bool = True):
    """The store holding exactly the current training products, each embedded from its current description.

    Missing or changed products are (re-)embedded, and products that the current split no longer trains on are
    removed: they would let retrieval see held-out descriptions. Prints a report only when something changed.
    """
    from helpers.data import load_processed

    train, _ = load_processed(profile)
    store, record_manager = open_index(profile)
    # A bar only when there is embedding to wait for; checking a complete index takes a second.
    missing = document_count(store) < len(train)
    report = index_documents(store, record_manager, product_documents(train), profile.index_batch_size,
                             progress=progress and missing)
    if report.added or report.removed:
        print(report)
    return store


def with_changed_description(documents: Sequence[Document], title: str,
                             note: str = "New edition, revised and expanded.") -> list[Document]:
    """The documents with one product's description extended by ``note``: a stand-in for a catalogue update."""
    changed = [document for document in documents if document.metadata["title"] == title]
    if not changed:
        raise KeyError(f"no document titled {title!r}")
    return [Document(id=document.id, metadata=document.metadata, page_content=f"{document.page_content} {note}")
            if document.metadata["title"] == title else document for document in documents]


def reindexing_counts(documents: Sequence[Document]) -> dict[str, dict[str, int]]:
    """What the indexing API does with ``documents`` run twice, then with the first one's description changed:
    an in-memory record manager and store and a fake embedding, with the course's keys (sha256, source id "uid").
    Seconds, not minutes: for checking that documents are built so that a re-run adds nothing."""
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.indexing import InMemoryRecordManager, index
    from langchain_core.vectorstores import InMemoryVectorStore

    record_manager = InMemoryRecordManager(namespace="reindexing-check")
    record_manager.create_schema()
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    first = documents[0]
    changed = [Document(id=first.id, metadata=first.metadata, page_content=f"{first.page_content} (changed)"),
               *documents[1:]]
    runs = {}
    for run, batch in (("first run", documents), ("second run", documents), ("one changed", changed)):
        result = index(list(batch), record_manager, store, cleanup="incremental", source_id_key="uid",
                       key_encoder="sha256")
        runs[run] = {key: int(value) for key, value in result.items()}
    return runs


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


def gate_report(store, sets: dict[str, Sequence[dict]], k: int) -> pd.DataFrame:
    """How well the gate (catalogue_record) decides whether the catalogue holds a product, on products it holds
    ("in-index") and products it does not ("held-out"): per set, how often it said "holds", then the decision's
    precision and recall (a product it holds is a positive)."""
    rows, said_holds, holds = [], [], []
    for set_name, records in sets.items():
        titles = [record["product"] for record in records]
        found = [catalogue_record(title, sources) is not None
                 for title, sources in zip(titles, store.as_retriever(search_kwargs={"k": k}).batch(titles))]
        truth = set_name != "held-out"
        rows.append({"set": set_name, "products": len(titles), "the catalogue holds them": "yes" if truth else "no",
                     "the gate said it holds": sum(found)})
        said_holds += found
        holds += [truth] * len(found)
    true_positives = sum(said and truth for said, truth in zip(said_holds, holds))
    precision = true_positives / sum(said_holds) if any(said_holds) else float("nan")
    recall = true_positives / sum(holds) if any(holds) else float("nan")
    table = pd.DataFrame(rows).set_index("set")
    table.attrs["precision"], table.attrs["recall"] = precision, recall
    return table


def gate_precision_recall(table: pd.DataFrame) -> str:
    return (f"the gate's decision \"the catalogue holds it\": precision {table.attrs['precision']:.2f}, "
            f"recall {table.attrs['recall']:.2f}")


# --- The RAG chain ------------------------------------------------------------------------------------------


class CourseModel(BaseLLM):
    """The course's model as a LangChain LLM: prompt text in, answer text out.

    A real ``BaseLLM``, so callbacks, tracing, ``.batch(return_exceptions=...)`` and ``.stream`` behave as LangChain
    users expect. ``.batch`` reaches ``_generate`` once with every prompt, which hands them all to
    ``helpers.models.generate`` (left-padded batched generation) instead of one call per prompt.
    """

    model: Any
    tokenizer: Any
    profile: Any  # a helpers.config.Profile (a frozen dataclass pydantic would copy)
    progress: bool = False
    # prompt → "stop" (the model wrote EOS) or "length" (max_new_tokens ended it), for every prompt answered so far
    finish_reasons: dict = Field(default_factory=dict)
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, model, tokenizer, profile: Profile, progress: bool = False, **kwargs: Any) -> None:
        super().__init__(model=model, tokenizer=tokenizer, profile=profile, progress=progress, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "course-unsloth"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.profile.short_name, "profile": self.profile.name,
                "max_new_tokens": self.profile.max_new_tokens, "decoding": "greedy"}

    def _generate(self, prompts: list[str], stop: list[str] | None = None, run_manager=None,
                  **kwargs: Any) -> LLMResult:
        from helpers.models import generate_answers

        answers = generate_answers(self.model, self.tokenizer, list(prompts), self.profile, progress=self.progress)
        self.finish_reasons.update((prompt, answer.finish_reason) for prompt, answer in zip(prompts, answers))
        return LLMResult(generations=[
            [Generation(text=cut_at_stop(answer.text, stop), generation_info={"finish_reason": answer.finish_reason})]
            for answer in answers
        ])

    def _stream(self, prompt: str, stop: list[str] | None = None, run_manager=None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        from helpers.models import stream_text

        written = ""
        for text in stream_text(self.model, self.tokenizer, prompt, self.profile):
            piece = cut_at_stop(written + text, stop)[len(written):]
            written += piece
            if piece:
                chunk = GenerationChunk(text=piece)
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
            if len(piece) < len(text):  # a stop sequence was reached
                return


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """The text up to the first stop sequence, as LangChain's ``stop`` argument asks."""
    for sequence in stop or ():
        text = text.split(sequence, 1)[0]
    return text


class _AddAnswers(Runnable[dict, dict]):
    """The chain's last step: asks the model about every prompt of the batch at once and keeps the sources.

    LangChain's RunnableAssign would call the model once per item in threads; this step sends one batch.
    """

    def __init__(self, llm) -> None:
        self.llm = llm

    def invoke(self, input: dict, config=None, **kwargs: Any) -> dict:
        return self.batch([input], config)[0]

    def batch(self, inputs: list[dict], config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list:
        if not inputs:
            return []
        answers = self.llm.batch([item["prompt"] for item in inputs], config, return_exceptions=return_exceptions)
        return [answer if isinstance(answer, Exception) else {**item, "answer": answer}
                for item, answer in zip(inputs, answers)]


def title_key(title: str) -> str:
    """A title as the gate compares it: case, punctuation, dashes and spacing aside ("Mog's Kittens" = "mogs kittens")."""
    return " ".join(re.findall(r"\w+", fact_form(title).replace("'", "")))


def catalogue_record(product: str, sources: Sequence[Document]) -> Document | None:
    """The gate: the retrieved record whose title is the asked title (title_key), or None when retrieval found no
    record of this product, only other products. A near neighbour ("Girls Ballet Tutu Neon Pink" for "… Neon Blue")
    is never taken for the product."""
    wanted = title_key(product)
    return next((document for document in sources if title_key(document.metadata["title"]) == wanted), None)


def _with_prompt(item: dict, context_words: int, gated: bool) -> dict:
    """The retrieval result with its prompt. Gated, the record is the one the gate found (or none); ungated, the first
    result is taken for the product's record, as a plain top-k chain does."""
    sources = item["sources"]
    record = catalogue_record(item["product"], sources) if gated else (sources[0] if sources else None)
    if record is None:
        catalogue, shortened = Catalogue(None), 0
    else:
        catalogue, shortened = catalogue_for(document_description(record.page_content),
                                             [document.page_content for document in sources if document is not record],
                                             context_words)
    return {**item, "record": record, "prompt": format_prompt(item["product"], catalogue),
            "shortened sources": shortened}


def retrieval_step(retriever, context_words: int | None = None, gated: bool = True):
    """product title → {product, sources, record, prompt, shortened sources}: the chain up to the model (the service
    streams its answer from this prompt). Without ``context_words``, the active profile's."""
    if context_words is None:
        context_words = active_profile(verbose=False).context_words
    add_prompt = RunnableLambda(partial(_with_prompt, context_words=context_words, gated=gated))
    return RunnableParallel(product=RunnablePassthrough(), sources=retriever) | add_prompt


def rag_chain(retriever, llm, context_words: int | None = None, gated: bool = True):
    """product title → {product, sources, record, prompt, shortened sources, answer}: retrieve, decide whether the
    catalogue holds the product (the gate), fill the prompt, generate.

    Gated (the course's grounded system), the prompt shows the record whose title is the product's among the other
    results, or says that the catalogue has no record; ungated, it presents the first result as the product's record,
    whatever it is (the lesson of notebook 06). Each document is shown up to ``context_words`` words
    (profile.context_words, as in training); a longer one is cut with a visible "…", and "shortened sources" counts
    them. ``llm`` is any Runnable from prompt text to answer text (``CourseModel``, ``course_llm``'s remote model, a
    ChatModel's text, or a fake one). Without ``context_words``, the active profile's.
    """
    return retrieval_step(retriever, context_words, gated) | _AddAnswers(llm)


# The model behind the chain, by configuration: in this process (the default), or any OpenAI-compatible server.
LLM_URL_ENV_VAR = "COURSE_LLM_URL"
LLM_KEY_ENV_VAR = "COURSE_LLM_API_KEY"
LLM_MODEL_ENV_VAR = "COURSE_LLM_MODEL"


def remote_llm(base_url: str, api_key: str, model_name: str, profile: Profile):
    """An OpenAI-compatible server's completions endpoint as the chain's model (``langchain_openai.OpenAI``).

    The completions API, not the chat API: the chain hands the model a finished course prompt (the Alpaca template
    with the retrieved context), which a chat endpoint would wrap in its chat template a second time. This course's
    service (helpers.serving) and vLLM both serve ``/v1/completions``. Greedy, at most the profile's new tokens.
    """
    from langchain_openai import OpenAI

    return OpenAI(base_url=base_url, api_key=api_key, model=model_name, temperature=0,
                  max_tokens=profile.max_new_tokens, max_retries=0)


def course_llm(profile: Profile, model=None, tokenizer=None, progress: bool = False):
    """The chain's model: ``$COURSE_LLM_URL`` (with ``$COURSE_LLM_API_KEY`` and ``$COURSE_LLM_MODEL``, default
    "fine-tuned") when set, else ``CourseModel`` over the model and tokenizer given."""
    base_url = os.environ.get(LLM_URL_ENV_VAR)
    if base_url:
        api_key = os.environ.get(LLM_KEY_ENV_VAR)
        if not api_key:
            raise RuntimeError(f"{LLM_URL_ENV_VAR} is set but {LLM_KEY_ENV_VAR} is not: the server needs a key "
                               "(python -m helpers.serving apikey NAME prints one for this course's service).")
        return remote_llm(base_url, api_key, os.environ.get(LLM_MODEL_ENV_VAR, "fine-tuned"), profile)
    if model is None or tokenizer is None:
        raise ValueError(f"No model given and {LLM_URL_ENV_VAR} is not set: pass the in-process model and tokenizer.")
    return CourseModel(model, tokenizer, profile, progress=progress)


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


def records_in_prompts(results_by_chain: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per product: the record each chain's prompt presented as the product's ("none" when it said the
    catalogue has none). Retrieval and the gate alone decide it, no model."""
    first = next(iter(results_by_chain.values()))
    return pd.DataFrame({chain: [result["record"].metadata["title"] if result["record"] is not None else "none"
                                 for result in results] for chain, results in results_by_chain.items()},
                        index=pd.Index([result["product"] for result in first], name="product"))


def answers_with_facts(results_by_chain: dict[str, list[dict]], records: Sequence[dict] | None = None,
                       facts: dict | None = None) -> pd.DataFrame:
    """rag_answers_table, each answer followed by what it got right, contradicted, invented or took from another
    source (facts_used; ``records`` are the products' own, needed where the index does not hold them)."""
    table = rag_answers_table(results_by_chain)
    for chain, results in results_by_chain.items():
        described = facts_used(results, facts, records)["facts"].tolist()
        table[f"answer ({chain})"] = [f"{answer}\n— {facts_line}"
                                     for answer, facts_line in zip(table[f"answer ({chain})"], described)]
    return table


def _own_uid(result: dict) -> str | None:
    """The uid of the product a RAG result answers for: the gate's record, else a source with its title."""
    for record in (result.get("record"), catalogue_record(result["product"], result["sources"])):
        if record is not None and title_key(record.metadata["title"]) == title_key(result["product"]):
            return record.metadata["uid"]
    return result.get("uid")


def facts_used(results: list[dict], facts: dict | None = None, records: Sequence[dict] | None = None) -> pd.DataFrame:
    """Which product's facts each RAG answer took: where its own record ranked among the sources, which record the
    prompt presented as the product's, how many of its own catalogue facts the answer states, and the facts it got
    right, contradicted, invented or took from another source (helpers.facts). ``records`` (uid and description),
    the products' own, are needed only for products the index does not hold (held-out ones); otherwise the record
    is the retrieved document with the product's title."""
    facts = load_facts() if facts is None else facts
    rows = []
    for result, given in zip(results, records or [None] * len(results)):
        own_uid = given["uid"] if given else _own_uid(result)
        uids_found = [document.metadata["uid"] for document in result["sources"]]
        others = [facts.get(uid, ()) for uid in uids_found if uid != own_uid]
        score = score_facts(result["answer"], facts.get(own_uid, ()), result["product"],
                            _own_description(result, own_uid, given), neighbours=others)
        shown = result.get("record")
        rows.append({
            "product": result["product"],
            "own record ranked": uids_found.index(own_uid) + 1 if own_uid in uids_found else "not retrieved",
            "record in the prompt": shown.metadata["title"] if shown is not None else "none",
            "own catalogue facts stated": f"{score.catalogue_facts_stated} of {score.catalogue_facts}",
            "facts": describe(score),
        })
    return pd.DataFrame(rows).set_index("product")


def _own_description(result: dict, own_uid: str | None, given: dict | None) -> str:
    """The product's own text, so that a number its description holds is not called invented."""
    if given:
        return given.get("description", "")
    own = [document.page_content for document in result["sources"] if document.metadata["uid"] == own_uid]
    return own[0] if own else ""


def own_facts_stated(result: dict, facts: dict) -> tuple[int, int]:
    """(how many of its own record's catalogue facts a RAG answer states, how many that record holds)."""
    score = score_facts(result["answer"], facts.get(_own_uid(result), ()))
    return score.catalogue_facts_stated, score.catalogue_facts


def facts_used_claim(results: list[dict], facts: dict | None = None, margin: float = FACTS_USED_MARGIN) -> str:
    """What facts_used shows that holds across runs: how many products had their own record ranked first (retrieval
    alone, no model), and whether the answers state fewer or more than half of their own records' catalogue facts,
    claimed only when the share lies at least ``margin`` from one half (a fine-tuned model's answers move between
    runs: helpers.config.FACTS_USED_MARGIN)."""
    facts = load_facts() if facts is None else facts
    ranked_first = sum(bool(result["sources"]) and result["sources"][0].metadata["uid"] == _own_uid(result)
                       for result in results)
    counts = [own_facts_stated(result, facts) for result in results]
    stated, total = sum(count for count, _ in counts), sum(total for _, total in counts)
    share = stated / total if total else 0.0
    half = clears(0.5 - share, margin, yes="fewer than half", no="more than half")
    return (f"own record ranked first: {ranked_first} of {len(results)} products; "
            f"own catalogue facts the answers state: {half} of their {total}")
