"""The retrieval promises: one document per product, no duplicates on re-runs, a chain that keeps its sources,
and the same code against a real Chroma server."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import chromadb
import pytest
from langchain_core.runnables import Runnable, RunnableLambda

from helpers import config, retrieval

PRODUCTS = {
    "Girls Ballet Tutu Neon Pink": "A bright pink tulle tutu for girls who love ballet and dress-up.",
    "Girls Ballet Tutu Neon Blue": "A neon blue tutu with an elastic waist, made for dance recitals.",
    "Mog's Kittens": "Judith Kerr's picture book: Mog the cat looks after her new kittens.",
    "The Prophet": "Kahlil Gibran's twenty-six prose poems on love, work, children and death.",
    "The Book of Revelation": "A verse-by-verse commentary on the last book of the New Testament.",
    "Stainless Steel Chef Knife 8 inch": "A sharp kitchen knife for vegetables, meat and fish, dishwasher safe.",
}


@pytest.fixture(scope="module")
def profile():
    return config.cpu_profile()


@pytest.fixture(scope="module")
def records():
    return [{"uid": f"B{index:04d}", "product": title, "description": text}
            for index, (title, text) in enumerate(PRODUCTS.items())]


@pytest.fixture(scope="module")
def tiny_store(profile, records, tmp_path_factory):
    store, record_manager = retrieval.open_index(profile, tmp_path_factory.mktemp("index") / "chroma")
    retrieval.index_documents(store, record_manager, retrieval.product_documents(records), batch_size=4, progress=False)
    return store


def test_documents_are_product_and_description_with_uid_as_id(records):
    document = retrieval.product_documents(records)[2]
    assert document.page_content == "Product: Mog's Kittens - Description: " + PRODUCTS["Mog's Kittens"]
    assert document.id == "B0002"
    assert document.metadata == {"uid": "B0002", "title": "Mog's Kittens"}


def test_a_record_without_description_is_a_clear_error(records):
    with pytest.raises(ValueError, match="record 2 has no description"):
        retrieval.product_documents([records[0], {"uid": "X", "product": "Empty", "description": ""}])


def test_second_indexing_run_adds_nothing(profile, records, tmp_path):
    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    documents = retrieval.product_documents(records)
    first = retrieval.index_documents(store, record_manager, documents[:4], batch_size=3, progress=False)
    second = retrieval.index_documents(store, record_manager, documents, batch_size=3, progress=False)
    third = retrieval.index_documents(store, record_manager, documents, batch_size=3, progress=False)
    assert (first.added, first.total) == (4, 4)
    assert (second.added, second.unchanged, second.total) == (2, 4, len(records))
    assert (third.added, third.unchanged, third.removed, third.total) == (0, len(records), 0, second.total)
    reopened, _ = retrieval.open_index(profile, tmp_path / "chroma")
    assert retrieval.document_count(reopened) == len(records)


def test_a_changed_description_is_embedded_again_and_its_old_vector_removed(profile, records, tmp_path):
    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    retrieval.index_documents(store, record_manager, retrieval.product_documents(records), batch_size=4, progress=False)
    changed = [dict(record) for record in records]
    changed[3]["description"] = "A new edition with an introduction and twelve illustrations."
    report = retrieval.index_documents(store, record_manager, retrieval.product_documents(changed), batch_size=4,
                                       progress=False)
    assert (report.added, report.unchanged, report.removed, report.total) == (1, len(records) - 1, 1, len(records))
    prophet = store.get(where={"uid": records[3]["uid"]}, include=["documents"])["documents"]
    assert prophet == [retrieval.document_text(records[3]["product"], changed[3]["description"])]


def test_a_product_no_longer_in_the_source_is_removed(profile, records, tmp_path):
    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    retrieval.index_documents(store, record_manager, retrieval.product_documents(records), batch_size=4, progress=False)
    report = retrieval.index_documents(store, record_manager, retrieval.product_documents(records[:-1]), batch_size=4,
                                       progress=False)
    assert (report.removed, report.total) == (1, len(records) - 1)
    assert retrieval.indexed_uids(store, [records[-1]["uid"]]) == set()


def test_an_index_of_another_embedding_model_is_refused(profile, records, tmp_path):
    import dataclasses

    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    retrieval.index_documents(store, record_manager, retrieval.product_documents(records), batch_size=4, progress=False)
    assert store._collection.metadata[retrieval.EMBEDDING_MODEL_KEY] == config.MINILM_HUB_ID
    other_model = dataclasses.replace(profile, embedding_model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(retrieval.IndexMismatchError, match="holds 6 vectors of sentence-transformers/all-MiniLM-L6-v2"):
        retrieval.check_store_embedding_model(store, retrieval.embedding_model_name(other_model.embedding_model))


def test_the_embedding_model_name_is_the_same_on_every_machine(profile):
    assert retrieval.embedding_model_name(profile.embedding_model) == config.MINILM_HUB_ID
    assert retrieval.embedding_model_name("intfloat/e5-small-v2") == "intfloat/e5-small-v2"


def test_new_documents_are_embedded_in_batches_of_similar_length(profile, records, tmp_path, monkeypatch):
    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    documents = retrieval.product_documents(records)
    retrieval.index_documents(store, record_manager, documents[:1], batch_size=2, progress=False)
    embedded = []
    embed = store.embeddings.embed_documents
    monkeypatch.setattr(store.embeddings.__class__, "embed_documents",
                        lambda self, texts: embedded.append([len(text) for text in texts]) or embed(texts))
    report = retrieval.index_documents(store, record_manager, documents, batch_size=2, progress=False)
    lengths = [length for batch in embedded for length in batch]
    assert lengths == sorted(len(document.page_content) for document in documents[1:])
    assert (report.added, report.unchanged, report.total) == (5, 1, 6)


def test_the_collection_uses_cosine_distance(tiny_store):
    assert tiny_store._collection.configuration["hnsw"]["space"] == "cosine"


def test_tutu_search_finds_both_tutus_first(tiny_store):
    top = retrieval.top_matches(tiny_store, "Girls Ballet Tutu Neon Pink", k=3)
    assert list(top["title"][:2]) == ["Girls Ballet Tutu Neon Pink", "Girls Ballet Tutu Neon Blue"]
    assert top["cosine distance"].is_monotonic_increasing


def test_perturbed_queries_are_deterministic_and_each_changes_the_title():
    title = "Girls Ballet Tutu Neon Pink"
    queries = retrieval.perturbed_queries(title, seed=3407)
    assert queries == retrieval.perturbed_queries(title, seed=3407)
    assert queries["exact title"] == title
    assert queries["lower-cased"] == "girls ballet tutu neon pink"
    assert len(queries["word dropped"].split()) == len(title.split()) - 1
    assert queries["typo"] != title and sorted(queries["typo"]) == sorted(title)


def test_hit_at_k_counts_the_products_own_document(tiny_store, records):
    quality = retrieval.retrieval_quality(tiny_store, records, seed=3407)
    assert list(quality.index) == list(retrieval.QUERY_KINDS)
    assert quality.loc["exact title", "hit@1"] == 1.0
    assert (quality["hit@3"] >= quality["hit@1"]).all()
    assert (quality["queries"] == len(records)).all()


def test_a_product_missing_from_the_index_is_never_a_hit(tiny_store, records):
    missing = {"uid": "NOT-INDEXED", "product": "Girls Ballet Tutu Neon Pink", "description": "x"}
    quality = retrieval.retrieval_quality(tiny_store, [records[0], missing], seed=3407)
    assert quality.loc["exact title", "hit@3"] == 0.5


class PromptRecorder(Runnable):
    """A fake LLM: answers with the prompt's length and remembers how it was called."""

    def __init__(self):
        self.batches = []

    def invoke(self, input, config=None, **kwargs):
        return self.batch([input])[0]

    def batch(self, inputs, config=None, **kwargs):
        self.batches.append(list(inputs))
        return [f"answer {len(prompt)}" for prompt in inputs]


def test_rag_chain_returns_answer_and_the_retrieved_sources(profile, tiny_store):
    fake_llm = RunnableLambda(lambda prompt: "ANSWER")
    result = retrieval.rag_chain(retrieval.retriever(tiny_store, profile), fake_llm).invoke("The Prophet")
    assert result["answer"] == "ANSWER"
    assert result["product"] == "The Prophet"
    assert len(result["sources"]) == profile.retriever_k
    assert result["sources"][0].metadata["title"] == "The Prophet"
    assert result["record"].metadata["title"] == "The Prophet"
    for document in result["sources"]:  # the record as its description, the others whole
        shown = document.page_content.split(" - Description: ")[1] if document is result["record"] else document.page_content
        assert shown in result["prompt"]


def test_the_gate_takes_only_the_record_whose_title_is_the_products():
    from langchain_core.documents import Document

    sources = [Document(page_content="", metadata={"uid": uid, "title": title}) for uid, title in
               (("1", "Girls Ballet Tutu Neon Pink"), ("2", "Girls Ballet Tutu Neon Blue"), ("3", "Mog's Kittens"))]
    assert retrieval.catalogue_record("girls ballet tutu  NEON BLUE", sources).metadata["uid"] == "2"
    assert retrieval.catalogue_record("Mogs Kittens", sources).metadata["uid"] == "3"  # punctuation aside
    assert retrieval.catalogue_record("Girls Ballet Tutu Neon Green", sources) is None  # a neighbour is not it


def test_gated_the_prompt_says_the_catalogue_has_no_record_and_ungated_it_takes_the_first_result(profile, tiny_store):
    from helpers.prompts import NO_RECORD, RECORD_HEADING

    search = retrieval.retriever(tiny_store, profile)
    gated = retrieval.retrieval_step(search, profile.context_words).invoke("Girls Ballet Tutu Neon Green")
    ungated = retrieval.retrieval_step(search, profile.context_words, gated=False).invoke("Girls Ballet Tutu Neon Green")
    assert gated["record"] is None and NO_RECORD in gated["prompt"]
    assert gated["sources"] == ungated["sources"]  # the same retrieval; only the decision differs
    assert ungated["record"] is ungated["sources"][0]
    assert f"{RECORD_HEADING}\n{ungated['sources'][0].page_content.split(' - Description: ')[1]}" in ungated["prompt"]


def test_the_gate_report_counts_decisions_and_gives_precision_and_recall(profile, tiny_store, records):
    held_out = [{"uid": "H1", "product": "Girls Ballet Tutu Neon Green", "description": "x"}]
    table = retrieval.gate_report(tiny_store, {"in-index": records[:3], "held-out": held_out}, k=profile.retriever_k)
    assert list(table["the gate said it holds"]) == [3, 0]
    assert table.attrs["precision"] == 1.0 and table.attrs["recall"] == 1.0
    assert retrieval.gate_precision_recall(table).endswith("precision 1.00, recall 1.00")


@pytest.mark.slow
def test_rag_chain_runs_the_course_model_and_returns_its_text(profile, tiny_store, base_model):
    import dataclasses

    short = dataclasses.replace(profile, max_new_tokens=8)
    model, tokenizer = base_model
    chain = retrieval.rag_chain(retrieval.retriever(tiny_store, short), retrieval.CourseModel(model, tokenizer, short))
    result = chain.invoke("Mog's Kittens")
    assert isinstance(result["answer"], str) and result["answer"].strip()
    # New text only: a 135M model may copy a retrieved document, but must not hand back the prompt itself.
    assert not result["prompt"].startswith(result["answer"][:20])
    assert [document.metadata["title"] for document in result["sources"]][0] == "Mog's Kittens"


def test_rag_chain_batch_sends_all_prompts_to_the_model_at_once(profile, tiny_store):
    recorder = PromptRecorder()
    products = ["The Prophet", "Mog's Kittens", "Girls Ballet Tutu Neon Blue"]
    results = retrieval.rag_chain(retrieval.retriever(tiny_store, profile), recorder).batch(products)
    assert len(recorder.batches) == 1 and len(recorder.batches[0]) == len(products)
    assert [result["product"] for result in results] == products
    assert [result["sources"][0].metadata["title"] for result in results] == products
    assert [result["answer"] for result in results] == [f"answer {len(result['prompt'])}" for result in results]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_heartbeat(url: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"chroma run exited with {server.returncode}: {server.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"no heartbeat from {url} within {timeout_s} s")


@pytest.fixture
def chroma_server(tmp_path):
    chroma_cli = Path(sys.executable).parent / "chroma"
    port = _free_port()
    server = subprocess.Popen(
        [str(chroma_cli), "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_heartbeat(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_server_url_sends_indexing_and_queries_to_the_chroma_server(profile, records, chroma_server, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv(retrieval.CHROMA_SERVER_ENV_VAR, chroma_server)
    local_folder = tmp_path / "embedded"
    store, record_manager = retrieval.open_index(profile, local_folder)
    documents = retrieval.product_documents(records)
    first = retrieval.index_documents(store, record_manager, documents, batch_size=4, progress=False)
    second = retrieval.index_documents(store, record_manager, documents, batch_size=4, progress=False)
    assert (first.added, second.added, second.total) == (len(records), 0, len(records))
    assert retrieval.top_matches(store, "Stainless Steel Chef Knife 8 inch", k=1)["title"].iloc[0] == (
        "Stainless Steel Chef Knife 8 inch")
    assert not local_folder.exists(), "with a server URL nothing may be written to the embedded store"
    port = int(chroma_server.rsplit(":", 1)[1])
    server_side = chromadb.HttpClient(host="127.0.0.1", port=port, settings=retrieval.chroma_settings())
    assert server_side.get_collection(retrieval.COLLECTION_NAME).count() == len(records)


def test_a_malformed_server_url_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(retrieval.CHROMA_SERVER_ENV_VAR, "127.0.0.1:8001")
    with pytest.raises(ValueError, match="CHROMA_SERVER_URL"):
        retrieval.chroma_client(tmp_path)


def test_rag_answers_table_puts_sources_beside_each_models_answer(profile, tiny_store):
    products = ["The Prophet", "Mog's Kittens"]
    chain = retrieval.rag_chain(retrieval.retriever(tiny_store, profile), RunnableLambda(lambda prompt: "base says"))
    base = chain.batch(products)
    tuned = [{**result, "answer": "tuned says"} for result in base]
    table = retrieval.rag_answers_table({"base": base, "fine-tuned": tuned})
    assert list(table.columns) == ["retrieved sources", "answer (base)", "answer (fine-tuned)"]
    assert table.loc["The Prophet", "retrieved sources"].split("\n")[0] == "The Prophet"
    assert table.loc["Mog's Kittens", "answer (fine-tuned)"] == "tuned says"
    with pytest.raises(ValueError, match="same products"):
        retrieval.rag_answers_table({"base": base, "reversed": base[::-1]})


def test_ensure_index_adds_the_missing_and_removes_stale_products(profile, records, tmp_path, monkeypatch, capsys):
    import datasets

    import helpers.data

    monkeypatch.setattr(retrieval, "index_directory", lambda _profile: tmp_path / "chroma")
    monkeypatch.setattr(helpers.data, "load_processed",
                        lambda _profile=None: (datasets.Dataset.from_list(records[:4]), datasets.Dataset.from_list(records[4:])))
    stale, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    retrieval.index_documents(stale, record_manager, retrieval.product_documents(records[3:]), batch_size=4,
                              progress=False)
    store = retrieval.ensure_index(profile, progress=False)
    assert retrieval.indexed_uids(store, [record["uid"] for record in records]) == {r["uid"] for r in records[:4]}
    assert "added 3 documents, 1 unchanged, 2 removed, 4 in the index" in capsys.readouterr().out
    retrieval.ensure_index(profile, progress=False)
    assert capsys.readouterr().out == ""


# --- The course model is a LangChain LLM ---------------------------------------------------------------------


class CallbackRecorder:
    """A LangChain callback handler that keeps what the LLM reported."""

    def __new__(cls):
        from langchain_core.callbacks import BaseCallbackHandler

        class Recorder(BaseCallbackHandler):
            def __init__(self):
                self.prompts, self.ends, self.tokens = [], 0, []

            def on_llm_start(self, serialized, prompts, **kwargs):
                self.prompts += prompts

            def on_llm_end(self, response, **kwargs):
                self.ends += 1

            def on_llm_new_token(self, token, **kwargs):
                self.tokens.append(token)

        return Recorder()


def test_course_model_batch_reaches_generate_once_and_reports_to_callbacks(profile, monkeypatch):
    import helpers.models

    calls = []
    monkeypatch.setattr(helpers.models, "generate_answers",
                        lambda model, tokenizer, prompts, profile, progress: calls.append(prompts) or
                        [helpers.models.Answer(f"answer to {prompt}", prompt != "p3", 5) for prompt in prompts])
    recorder = CallbackRecorder()
    llm = retrieval.CourseModel(None, None, profile)
    answers = llm.batch(["p1", "p2", "p3"], config={"callbacks": [recorder]})
    assert calls == [["p1", "p2", "p3"]]
    assert answers == ["answer to p1", "answer to p2", "answer to p3"]
    assert recorder.prompts == ["p1", "p2", "p3"] and recorder.ends == 3
    # How each answer ended, as the OpenAI API reports it, kept per prompt for the evaluation.
    assert llm.finish_reasons == {"p1": "stop", "p2": "stop", "p3": "length"}


def test_course_model_returns_exceptions_when_asked(profile, monkeypatch):
    import helpers.models

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no room for the batch")

    monkeypatch.setattr(helpers.models, "generate_answers", out_of_memory)
    llm = retrieval.CourseModel(None, None, profile)
    results = llm.batch(["p1", "p2"], return_exceptions=True)
    assert [type(result) for result in results] == [MemoryError, MemoryError]
    with pytest.raises(MemoryError):
        llm.invoke("p1")


def test_chain_callbacks_see_the_filled_prompt(profile, tiny_store, monkeypatch):
    import helpers.models

    monkeypatch.setattr(helpers.models, "generate_answers",
                        lambda model, tokenizer, prompts, profile, progress: [helpers.models.Answer("ok", True, 1)
                                                                              for _ in prompts])
    recorder = CallbackRecorder()
    chain = retrieval.rag_chain(retrieval.retriever(tiny_store, profile), retrieval.CourseModel(None, None, profile))
    result = chain.invoke("The Prophet", config={"callbacks": [recorder]})
    assert result["answer"] == "ok"
    assert recorder.prompts == [result["prompt"]]


@pytest.mark.slow
def test_course_model_streams_the_same_answer_piece_by_piece(profile, base_model):
    import dataclasses

    from helpers.prompts import format_prompt

    model, tokenizer = base_model
    short = dataclasses.replace(profile, max_new_tokens=12)
    llm = retrieval.CourseModel(model, tokenizer, short)
    recorder = CallbackRecorder()
    pieces = list(llm.stream(format_prompt("Mog's Kittens"), config={"callbacks": [recorder]}))
    assert len(pieces) > 1
    assert recorder.tokens == pieces
    assert "".join(pieces).strip() == llm.invoke(format_prompt("Mog's Kittens"))


def test_a_changed_description_stand_in_changes_one_document(records):
    documents = retrieval.product_documents(records)
    changed = retrieval.with_changed_description(documents, "The Prophet")
    assert [a.page_content == b.page_content for a, b in zip(documents, changed)] == [True] * 3 + [False] + [True] * 2
    with pytest.raises(KeyError):
        retrieval.with_changed_description(documents, "No Such Product")


def test_the_indexing_bar_moves_once_per_finished_batch(profile, records, tmp_path, capsys):
    # The same lines on every run: nbval compares them, and a bar drawn by elapsed time would not be.
    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    retrieval.index_documents(store, record_manager, retrieval.product_documents(records), batch_size=4)
    counts = [line.split("|")[2].split()[0] for line in capsys.readouterr().out.replace("\r", "\n").splitlines()
              if line.startswith("indexing")]
    assert counts == ["0/6", "4/6", "6/6"]


def test_vectors_lost_behind_the_records_back_are_indexed_again(profile, records, tmp_path):
    # The Chroma folder deleted by hand (or a server reset) while the record manager still lists every hash.
    store, record_manager = retrieval.open_index(profile, tmp_path / "chroma")
    documents = retrieval.product_documents(records)
    retrieval.index_documents(store, record_manager, documents, batch_size=4, progress=False)
    store.reset_collection()
    report = retrieval.index_documents(store, record_manager, documents, batch_size=4, progress=False)
    assert (report.added, report.total) == (len(records), len(records))


def test_long_sources_are_cut_visibly_and_counted(profile, tiny_store):
    chain = retrieval.rag_chain(retrieval.retriever(tiny_store, profile), RunnableLambda(lambda prompt: "ANSWER"),
                                context_words=3)
    result = chain.invoke("The Prophet")
    assert result["shortened sources"] == profile.retriever_k
    assert result["prompt"].count(" …") == profile.retriever_k


def test_facts_used_says_which_facts_an_answer_got_right_and_which_it_took_from_another_source():
    from langchain_core.documents import Document

    sources = [Document(page_content="", metadata={"uid": uid, "title": title})
               for uid, title in (("0394404289", "The Prophet"), ("0933697214", "The Book of Revelation"))]
    right = {"product": "The Prophet", "sources": sources, "record": sources[0],
             "answer": "Kahlil Gibran's 26 aphorisms, in hardcover."}
    wrong = {"product": "The Prophet", "sources": sources, "record": sources[1],
             "answer": "Clarence Larkin's study, 208 pages, first published in 1919."}
    table = retrieval.facts_used([right, wrong])
    assert list(table["own record ranked"]) == [1, 1]
    assert list(table["record in the prompt"]) == ["The Prophet", "The Book of Revelation"]
    assert list(table["own catalogue facts stated"]) == ["3 of 4", "0 of 4"]
    assert table["facts"].iloc[0] == "right: aphorisms 26, format hardcover, person kahlil gibran"
    assert "contradicts: person clarence larkin" in table["facts"].iloc[1]
    assert "from a neighbour: pages 208, person clarence larkin, year 1919" in table["facts"].iloc[1]


def test_a_number_the_products_own_description_holds_is_not_invented():
    from langchain_core.documents import Document

    description = "Judith Kerr's adventures of Mog have entertained children for more than 30 years."
    own = Document(page_content=f"Product: Mog's Kittens - Description: {description}",
                   metadata={"uid": "0001360000", "title": "Mog's Kittens"})
    answer = {"product": "Mog's Kittens", "sources": [own], "record": own,
              "answer": "Mog has entertained children for more than 30 years."}
    assert "invents" not in retrieval.facts_used([answer])["facts"].iloc[0]
    unheld = {**answer, "sources": [], "record": None}
    assert "invents" not in retrieval.facts_used([unheld], records=[{"uid": "0001360000",
                                                                    "description": description}])["facts"].iloc[0]
    assert "invents: 30" in retrieval.facts_used([unheld], records=[{"uid": "0001360000",
                                                                    "description": ""}])["facts"].iloc[0]
