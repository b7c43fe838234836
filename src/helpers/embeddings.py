"""The embedding model, all-MiniLM-L6-v2 through LangChain: loaded once per process, for the training records'
neighbours (helpers.training.records), the index (helpers.retrieval) and the cosine metric (helpers.evaluation).

sentence-transformers imports transformers: a process that also loads the course model imports helpers.models
(Unsloth) first.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from helpers.quiet import progress


@cache
def load_embeddings(model_path: str):
    """all-MiniLM-L6-v2 through LangChain, normalised so that cosine = dot product; loaded once per process."""
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model_name=model_path,
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )


def embed(texts: list[str], embedding_model: str, batch_size: int, description: str | None = None) -> np.ndarray:
    """Normalised embeddings of many texts, a batch at a time, with one progress bar when described."""
    embeddings = load_embeddings(embedding_model)
    starts = range(0, len(texts), batch_size)
    if description:
        starts = progress(starts, total=len(starts), desc=description, unit="batch")
    return np.concatenate([np.asarray(embeddings.embed_documents(texts[start:start + batch_size]))
                           for start in starts]) if texts else np.zeros((0, 0))
