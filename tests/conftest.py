"""Fixtures shared across test files."""
import pytest

from helpers.config import cpu_profile


@pytest.fixture(scope="session")
def base_model():
    """(model, tokenizer) of the cpu profile's base model, loaded once for the whole run: loading costs seconds, and
    generation settings come from the profile passed to ``generate``, not from the loaded model."""
    from helpers.models import load_model

    return load_model(cpu_profile(), verbose=False)
