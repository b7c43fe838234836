# The course's commands. Each one bootstraps the set-up first (idempotent, seconds when done).
#   make course   run notebooks 01-07 in order on the active profile, outputs under outputs/, notebooks executed in place
#                 (then each cell's stream outputs merged, progress bars kept at their last state: one stored line
#                 per bar, as nbval compares them)
#   make test     unit tests + nbval re-execution of every notebook (what CI runs)
#   make bench    the performance benchmarks (not timed tests; numbers under outputs/benchmarks/)
#   make student  the student versions of the notebooks, student/NN_*.ipynb (nbgrader generate_assignment)
#   make release DEST=folder   the student copy of the course to hand out: helpers, data, set-up, README and the
#                 student notebooks in notebooks/; no solution, hidden test or instructor test. In that copy (it holds
#                 .course-release) make course goes on past an exercise not done yet, and make test reports which
#                 exercises pass their visible tests (python -m helpers.lab progress)
#   make serve    the course's service on http://$(HOST):$(PORT) (default 127.0.0.1:8000), on the active profile:
#                 OpenAI-compatible API at /v1, a page at /; add users with python -m helpers.serving adduser NAME
#   make grade SUBMISSION=path   grade a submitted notebook, or a folder of them (one sub-folder per student);
#                 reports (JSON + Markdown, and summary.csv for a folder) go to graded/ beside it, or to REPORTS=dir;
#                 GRADE_ARGS="--cell-timeout S --timeout S --profile NAME" passes options to python -m helpers.lab grade
#   make docs     the course site (docs/), built offline from the committed, executed notebooks (never re-executed) with
#                 Sphinx, MyST-NB and sphinx-book-theme into docs/_build/html (open its index.html); warnings are errors
# The environment everything runs in is the one scripts/setup.sh chooses (COURSE_ENV, VENV, an active conda
# environment other than base, else .venv; see the script's header). It is asked here once, so the set-up and every
# recipe below use the same python and jupyter. COURSE_ENV and VENV may be given on the command line or exported.
ENV_PREFIX := $(shell COURSE_ENV='$(COURSE_ENV)' VENV='$(VENV)' bash scripts/setup.sh --print-env)
BIN        = $(if $(ENV_PREFIX),$(ENV_PREFIX)/bin,$(error scripts/setup.sh could not choose an environment: see above))
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
RELEASE   := $(wildcard .course-release)
export PYTHONHASHSEED := 0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup course test unit nbval progress bench serve student release grade docs clean-outputs

setup:
	@COURSE_ENV='$(COURSE_ENV)' VENV='$(VENV)' bash scripts/setup.sh

course: setup
	@for nb in $(NOTEBOOKS); do \
		echo "== executing $$nb"; \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=python3 \
			$(if $(RELEASE),--allow-errors) "$$nb" || exit 1; \
		$(BIN)/jupyter nbconvert --to notebook --inplace --log-level=WARN \
			--CoalesceStreamsPreprocessor.enabled=True "$$nb" || exit 1; \
	done
	@echo "== course done: executed notebooks in notebooks/, results in outputs/"
	$(if $(RELEASE),@$(BIN)/python -m helpers.lab progress notebooks || true)

ifeq ($(RELEASE),)
test: setup unit nbval
else
test: setup progress
endif

progress:
	$(BIN)/python -m helpers.lab progress notebooks

unit:
	$(BIN)/python -m pytest tests -q

nbval:
	$(BIN)/python -m pytest --nbval $(NOTEBOOKS) --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
		--nbval-kernel-name python3 --nbval-cell-timeout 3600 -p no:cacheprovider -q

bench: setup
	$(BIN)/python benchmarks/preprocessing.py

serve: setup
	$(BIN)/python -m helpers.serving serve --host $(HOST) --port $(PORT)

student: setup
	$(BIN)/python -m helpers.lab student

release: setup
	@if [ -z "$(DEST)" ]; then echo "usage: make release DEST=path/to/new/folder" >&2; exit 2; fi
	$(BIN)/python -m helpers.lab release "$(DEST)"

grade: setup
	@if [ -z "$(SUBMISSION)" ]; then \
		echo "usage: make grade SUBMISSION=path/to/NN_name.ipynb (or a folder of them) [REPORTS=dir]" >&2; exit 2; fi
	$(BIN)/python -m helpers.lab grade "$(SUBMISSION)" $(if $(REPORTS),--report-dir "$(REPORTS)") $(GRADE_ARGS)

# The repository root is the source folder (-c docs: the configuration), so the notebooks are read where they are.
# -E: a fresh build every time, so that a warning is never hidden by a page left over from the build before.
docs: setup
	$(BIN)/python -m sphinx -W --keep-going -n -E -b html -c docs . docs/_build/html
	@echo "== course site: open docs/_build/html/index.html"

clean-outputs:
	rm -rf outputs/processed outputs/adapters outputs/chroma
