"""Cheap promises about the committed notebooks, checked before nbval spends minutes re-executing them."""
import json
from pathlib import Path

import pytest

from helpers.config import paths

NOTEBOOKS = sorted(paths().notebooks.glob("[0-9][0-9]_*.ipynb"))
# nbval only honours a marker comment that is exactly the marker: "# NBVAL_IGNORE_OUTPUT (why)" is silently ignored.
NBVAL_MARKERS = {"NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION", "NBVAL_SKIP"}


def code_cells(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [cell for cell in cells if cell["cell_type"] == "code" and "".join(cell["source"]).strip()]


def test_the_course_has_its_notebooks_in_order():
    assert NOTEBOOKS, "no notebooks found"
    numbers = [int(notebook.name[:2]) for notebook in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_nbval_markers_are_spelled_exactly(notebook):
    for cell in code_cells(notebook):
        for line in "".join(cell["source"]).splitlines():
            comment = line.strip().lstrip("#").strip()
            if line.strip().startswith("#") and comment.startswith("NBVAL"):
                assert comment in NBVAL_MARKERS, f"{notebook.name}: {line.strip()!r} is not a marker nbval reads"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_executed_without_errors(notebook):
    cells = code_cells(notebook)
    assert all(cell["execution_count"] for cell in cells), f"{notebook.name} has unexecuted cells"
    errors = [output for cell in cells for output in cell["outputs"] if output["output_type"] == "error"]
    assert not errors, f"{notebook.name} stores an error output"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_starts_by_printing_its_profile(notebook):
    first = "".join(code_cells(notebook)[0]["source"])
    assert "helpers.config.active_profile()" in first


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_has_no_path_hacks(notebook):
    for cell in code_cells(notebook):
        source = "".join(cell["source"])
        assert "sys.path" not in source and "/work/" not in source and "/home/" not in source


def table_rows(markdown: str, sets: set[str]) -> dict[tuple[str, str], list[str]]:
    """(set, system) → its numbers, from every markdown table row that starts with a set and a system name."""
    from helpers.evaluation import SHOWN

    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in sets and cells[1] in SHOWN:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.parametrize("page", ["README.md", "docs/results.md"])
def test_readme_quotes_the_committed_comparison(page):
    """The results table of the README and of the site's results page is copied by hand, so it must be re-copied
    whenever notebook 06's numbers move."""
    sets = {"in-index", "held-out"}
    computed = table_rows((paths().outputs / "comparison.md").read_text(encoding="utf-8"), sets)
    quoted = table_rows((paths().root / page).read_text(encoding="utf-8"), sets)
    assert len(computed) == 12 and quoted == computed, f"{page} does not quote outputs/comparison.md"


def output_text(output: dict) -> str:
    if "text" in output:
        return "".join(output["text"])
    return "".join("".join(value) for key, value in output.get("data", {}).items() if key.startswith("text/"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_no_output_names_a_path_of_the_machine_that_ran_it(notebook):
    # A clone elsewhere would print another path, and nbval (which compares stderr too) would fail there.
    root = str(paths().root)
    for cell in code_cells(notebook):
        for output in cell["outputs"]:
            text = output_text(output)
            assert root not in text and "site-packages" not in text, f"{notebook.name}: {text[:300]!r}"


# Warnings a checked cell shows on purpose, each explained in its notebook's markdown.
EXPLAINED_WARNINGS: dict[str, tuple[str, ...]] = {
    # None today: the truncation warnings of earlier versions are gone (descriptions too long to train on whole
    # are passed over and counted; RAG sources are cut visibly and counted; a prompt that does not fit is an error).
}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_checked_cells_write_nothing_unexplained_to_stderr(notebook):
    # A warning in a checked cell is a problem to fix, a named known-noisy message for helpers.quiet, or a real
    # condition the notebook explains (EXPLAINED_WARNINGS).
    explained = EXPLAINED_WARNINGS.get(notebook.name, ())
    for cell in code_cells(notebook):
        if "".join(cell["source"]).lstrip().startswith("# NBVAL_IGNORE_OUTPUT"):
            continue
        for output in cell["outputs"]:
            if output.get("name") == "stderr":
                lines = [line for line in output_text(output).splitlines() if line.strip()]
                unexplained = [line for line in lines if not any(message in line for message in explained)]
                assert not unexplained, f"{notebook.name}: {unexplained}"
