"""Fixtures shared across test files."""
import pytest

from helpers.config import active_profile, cpu_profile, prepare_environment

# Before any test module imports torch: the environment every notebook's first cell sets (helpers.config).
prepare_environment(active_profile(verbose=False))


@pytest.fixture(scope="session")
def base_model():
    """(model, tokenizer) of the cpu profile's base model, loaded once for the whole run: loading costs seconds, and
    generation settings come from the profile passed to ``generate``, not from the loaded model."""
    from helpers.models import load_model

    return load_model(cpu_profile(), verbose=False)
