"""Imports do what their names say: ``import helpers`` sets nothing, a profile sets what it needs, and only the
stages that load models load Unsloth. Each check runs in a fresh interpreter, where nothing was imported before."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import config

SRC = Path(config.__file__).resolve().parent
MODEL_LIBRARIES = ("unsloth", "torch", "transformers", "trl", "peft", "sentence_transformers", "langchain_huggingface")
CLEAN_ENVIRONMENT = {name: value for name, value in os.environ.items()
                     if name not in {*config.CPU_NUMERICS, *config.LIBRARY_ENVIRONMENT, "HF_HUB_OFFLINE",
                                     config.PROFILE_ENV_VAR}}


def fresh_process(code: str, cwd: Path | None = None, **environment: str) -> dict:
    """Run ``code`` in a new interpreter; it ends by printing a JSON object, returned here."""
    result = subprocess.run([sys.executable, "-c", code], env={**CLEAN_ENVIRONMENT, **environment}, cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


LOADED = f"[name for name in {MODEL_LIBRARIES!r} if name in sys.modules]"


def test_import_helpers_sets_nothing_and_imports_no_library():
    report = fresh_process(
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import helpers\n"
        "changed = sorted(set(os.environ.items()) ^ set(before.items()))\n"
        f"print(json.dumps({{'changed': changed, 'loaded': {LOADED}, 'modules': sorted(m for m in sys.modules if m.startswith('helpers'))}}))"
    )
    print(report)
    assert report == {"changed": [], "loaded": [], "modules": ["helpers"]}


def test_the_statistics_of_evaluation_load_no_model_library():
    report = fresh_process(
        "import json, sys\n"
        "import helpers.evaluation as evaluation\n"
        "low, high = evaluation.bootstrap_interval([0.0, 1.0, 1.0, 0.0, 1.0], seed=0)\n"
        "paired = evaluation.paired_interval([0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], seed=0)\n"
        f"print(json.dumps({{'interval': [low, high], 'paired': paired.mean, 'loaded': {LOADED}}}))"
    )
    print(report)
    assert report["loaded"] == []
    assert report["interval"][0] < 0.6 < report["interval"][1] and report["paired"] == pytest.approx(0.25)


def test_the_models_stage_imports_unsloth_first_and_sets_the_profile_environment():
    report = fresh_process(
        "import json, os, sys\n"
        "import helpers.models\n"
        "order = [name for name in sys.modules if name.split('.')[0] in ('unsloth', 'transformers', 'trl', 'peft')]\n"
        "print(json.dumps({'first': order[0].split('.')[0], 'numerics': {name: os.environ.get(name) for name in "
        f"{list(config.CPU_NUMERICS)!r}}}, 'offline': os.environ.get('HF_HUB_OFFLINE')}}))"
    )
    print(report)
    assert report["first"] == "unsloth"
    expected = config.CPU_NUMERICS if config.pins_cpu_numerics(config.cpu_profile()) else {}
    assert report["numerics"] == {name: expected.get(name) for name in config.CPU_NUMERICS}
    assert report["offline"] == "1"


def test_only_the_models_stage_imports_unsloth():
    importers = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "unsloth" for name in names):
                importers.append(path.relative_to(SRC).as_posix())
    assert sorted(set(importers)) == ["models.py"]


@pytest.mark.parametrize("profile, pinned", [("cpu", True), ("lab", True), ("gpu", False)])
def test_a_profile_pins_the_cpu_numerics_only_where_it_needs_them(profile, pinned):
    report = fresh_process(
        "import json, os, sys\n"
        "import helpers\n"
        "helpers.config.active_profile(verbose=False)\n"
        f"print(json.dumps({{'numerics': [os.environ.get(name) for name in {list(config.CPU_NUMERICS)!r}], "
        f"'loaded': {LOADED}}}))",
        COURSE_PROFILE=profile,
    )
    x86 = config.pins_cpu_numerics(config.cpu_profile())
    expected = list(config.CPU_NUMERICS.values()) if pinned and x86 else [None] * len(config.CPU_NUMERICS)
    assert report == {"numerics": expected, "loaded": []}, "choosing a profile imported a library or set the wrong numerics"


def test_no_profile_variable_and_no_nvidia_driver_chooses_cpu_without_importing_torch():
    if config.nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver: choosing the profile asks torch, as it should")
    report = fresh_process(
        "import json, sys\nimport helpers\n"
        f"print(json.dumps({{'profile': helpers.config.active_profile(verbose=False).name, 'loaded': {LOADED}}}))"
    )
    assert report == {"profile": "cpu", "loaded": []}


def test_torch_imported_before_the_profile_is_warned_about():
    if not config.pins_cpu_numerics(config.cpu_profile()):
        pytest.skip("the cpu profile pins no numerics on this machine (not x86)")
    result = subprocess.run([sys.executable, "-c", "import torch, helpers; helpers.config.active_profile()"],
                            env=CLEAN_ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "torch was imported before the course's profile set its CPU numerics" in result.stderr


def test_outside_the_repository_the_error_says_where_and_what_to_do(tmp_path):
    installed = tmp_path / "site-packages" / "helpers" / "config.py"  # a regular, non-editable install
    with pytest.raises(config.CourseRepositoryNotFound) as raised:
        config._find_repo_root(package_file=installed, cwd=tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message and config.ROOT_ENV_VAR in message and "pip install -e ." in message


def test_import_helpers_works_outside_the_repository(tmp_path):
    report = fresh_process("import json, helpers\nprint(json.dumps({'stages': len(helpers.STAGES)}))", cwd=tmp_path)
    assert report["stages"] > 0
