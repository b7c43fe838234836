# The course site: `make docs` (Sphinx + MyST-NB + sphinx-book-theme), built offline from the committed, executed
# notebooks, which are rendered as they are stored (never re-executed). The source folder is the repository root, so
# the notebooks are read where they live (not copied) and the pages are those under docs/:
#   python -m sphinx -W --keep-going -n -E -b html -c docs . docs/_build/html
# Open docs/_build/html/index.html (it forwards to docs/index.html, the front page). tests/test_docs.py builds it
# the same way, checks every internal link and takes a screenshot of the front page.
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

project = "Fine-tune and ground a small language model"
extensions = ["myst_nb"]

root_doc = "docs/index"
# Only the pages and the course's notebooks are documents: not README.md, not student/ or outputs/, not the build.
include_patterns = ["docs/**", "notebooks/[0-9][0-9]_*.ipynb"]
# Every other top-level folder is left out of Sphinx's walk for documents, which would otherwise list all of .venv/,
# data/ and outputs/ (gigabytes) file by file.
exclude_patterns = ["docs/_build", "docs/_templates"] + sorted(
    entry.name for entry in ROOT.iterdir() if entry.is_dir() and entry.name not in ("docs", "notebooks"))
templates_path = ["_templates"]

# Render the outputs the notebooks were committed with; executing them is `make course`'s job (35 minutes).
nb_execution_mode = "off"
# Links to a heading's anchor (reproducibility.md#what-reproduces-means-for-instructors), named as GitHub names them.
myst_heading_anchors = 3

# Offline: no intersphinx, no remote assets (the theme's styles, fonts and icons are installed with it).
html_theme = "sphinx_book_theme"
html_title = "Fine-tune and ground a small language model"
html_theme_options = {"show_toc_level": 2}
# docs/_build/html/index.html: the entry point the README names, forwarding to the front page docs/index.html.
html_additional_pages = {"index": "redirect.html"}
