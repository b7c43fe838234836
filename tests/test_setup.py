"""The set-up's promises: a pinned installer, no requirement that nothing needs, and the environment you chose.

The scripts are run in a scratch copy of the repository whose "python" only records how it was called, so no test
here installs anything or touches the real environment.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
INSTALLER = ("pip", "setuptools", "wheel")
# Where the course's code lives: what is imported here is what the course needs.
COURSE_CODE = ("src", "tests", "benchmarks", "scripts")
SETUP_FILES = ("scripts/setup.sh", "Makefile", "requirements.txt", "requirements-nodeps.txt", "constraints.txt",
               "pyproject.toml")
# Variables that choose an environment, or that an outer `make` would pass down; each test sets its own.
CHOOSING_VARIABLES = ("COURSE_ENV", "VENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_EXE", "CONDA_SHLVL",
                      "MAMBA_ROOT_PREFIX", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


# --- reading the requirement files and the code --------------------------------------------------------------------


def requirement_entries(path: Path) -> list[tuple[Requirement, str]]:
    """Each requirement with the comment that opens its block (blocks are separated by blank lines)."""
    entries, block_comment = [], []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            block_comment = []
        elif stripped.startswith("#"):
            block_comment.append(stripped)
        elif not stripped.startswith("-"):
            entries.append((Requirement(stripped.split(" #")[0]), " ".join(block_comment)))
    return entries


def exact_pins(path: Path) -> dict[str, str]:
    pins = {}
    for requirement, _ in requirement_entries(path):
        specifiers = list(requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def top_level_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    lines = [line for cell in cells if cell["cell_type"] == "code" for line in "".join(cell["source"]).splitlines()]
    # IPython magics and shell escapes are not Python.
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def course_imports() -> set[str]:
    modules = set()
    for folder in COURSE_CODE:
        for path in (REPO / folder).rglob("*.py"):
            modules |= top_level_imports(path.read_text())
    for path in (REPO / "notebooks").glob("*.ipynb"):
        modules |= top_level_imports(notebook_code(path))
    return modules


def third_party(modules: set[str]) -> set[str]:
    return {module for module in modules if module not in sys.stdlib_module_names and module != "helpers"}


def distributions_by_module() -> dict[str, set[str]]:
    return {module: {canonicalize_name(name) for name in names}
            for module, names in metadata.packages_distributions().items()}


# --- a scratch copy of the repository, with a stand-in environment ---------------------------------------------------


def fake_environment(prefix: Path) -> Path:
    """An environment whose python records every call (in prefix/calls.log) and pretends to succeed."""
    (prefix / "bin").mkdir(parents=True)
    python = prefix / "bin" / "python"
    python.write_text('#!/usr/bin/env bash\n'
                      'printf "%s\\n" "$*" >> "$(dirname "$0")/../calls.log"\n'
                      '[ "${1:-}" = --version ] && echo "Python 3.11.7"\n'
                      'exit 0\n')
    python.chmod(0o755)
    return prefix


@pytest.fixture
def scratch(tmp_path):
    """(repo copy, environment variables): no real interpreter is reachable, so nothing can be created or installed."""
    repo = tmp_path / "repo"
    for name in SETUP_FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    # A set-up that ignored the chosen environment would build a venv with python3.11 or python3: make both fail.
    refusing = tmp_path / "refusing-python"
    refusing.mkdir()
    for name in ("python3.11", "python3", "python"):
        (refusing / name).write_text("#!/bin/sh\necho 'this test allows no real python' >&2\nexit 97\n")
        (refusing / name).chmod(0o755)
    env = {name: value for name, value in os.environ.items() if name not in CHOOSING_VARIABLES}
    env["PATH"] = f"{refusing}{os.pathsep}{env['PATH']}"
    env["PIP_NO_INDEX"] = "1"
    return repo, env


def run(command: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def print_env(repo: Path, env: dict[str, str]) -> str:
    result = run(["bash", "scripts/setup.sh", "--print-env"], repo, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


# --- pins ------------------------------------------------------------------------------------------------------------


def test_pip_setuptools_and_wheel_are_pinned_exactly_and_alike_in_both_files():
    requirements, constraints = exact_pins(REPO / "requirements.txt"), exact_pins(REPO / "constraints.txt")
    for name in INSTALLER:
        assert name in requirements, f"requirements.txt does not pin {name} exactly"
        assert requirements[name] == constraints.get(name), f"{name}: requirements.txt and constraints.txt differ"
    disagreeing = {name: (version, constraints.get(name)) for name, version in requirements.items()
                   if constraints.get(name) != version}
    assert not disagreeing, f"requirements.txt and constraints.txt pin differently: {disagreeing}"


def test_every_requirement_is_imported_by_the_course_or_says_who_needs_it():
    imported = course_imports()
    modules_of: dict[str, set[str]] = {}
    for module, distributions in distributions_by_module().items():
        for distribution in distributions:
            modules_of.setdefault(distribution, set()).add(module)
    unexplained = [
        str(requirement) for requirement, block_comment in requirement_entries(REPO / "requirements.txt")
        if not block_comment.startswith("# Not imported")
        and not modules_of.get(canonicalize_name(requirement.name), set()) & imported
    ]
    assert not unexplained, (
        f"requirements.txt installs {unexplained}, which nothing in {COURSE_CODE} or notebooks/ imports: remove them, "
        "or move them to a block whose comment starts with '# Not imported' and says who needs them")


def test_pyproject_declares_every_third_party_package_the_helpers_import():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(dependency).name) for dependency in project["dependencies"]}
    helpers_imports = set()
    for path in (REPO / "src" / "helpers").rglob("*.py"):
        helpers_imports |= top_level_imports(path.read_text())
    distributions = distributions_by_module()
    no_deps = {canonicalize_name(requirement.name)
               for requirement, _ in requirement_entries(REPO / "requirements-nodeps.txt")}
    missing = {}
    for module in sorted(third_party(helpers_imports)):
        providers = distributions.get(module, set())
        assert providers, f"src/helpers imports {module!r}, which no installed distribution provides"
        if providers & no_deps:
            # Unsloth must go in with --no-deps: declared here, `pip install -e .` would resolve it (and fall back
            # to a release without the CPU backend).
            assert not providers & declared, f"{module}: installed with --no-deps, so it must not be a dependency"
        elif not providers & declared:
            missing[module] = sorted(providers)
    assert not missing, f"pyproject.toml's dependencies lack what src/helpers imports: {missing}"
    assert declared <= set(exact_pins(REPO / "constraints.txt")), "every declared dependency has a tested pin"


# --- which environment --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["COURSE_ENV", "VENV"])
def test_an_environment_named_by_a_variable_is_used_and_no_venv_is_created(scratch, tmp_path, variable):
    repo, env = scratch
    course_env = fake_environment(tmp_path / "envs" / "course")
    env[variable] = str(course_env)
    assert print_env(repo, env) == str(course_env)
    assert not (repo / ".venv").exists()


def test_the_active_conda_environment_is_used(scratch, tmp_path):
    repo, env = scratch
    conda_env = fake_environment(tmp_path / "conda" / "envs" / "finetune-rag-course")
    env |= {"CONDA_PREFIX": str(conda_env), "CONDA_DEFAULT_ENV": "finetune-rag-course",
            "CONDA_EXE": str(tmp_path / "conda" / "bin" / "conda")}
    assert print_env(repo, env) == str(conda_env)
    assert not (repo / ".venv").exists()


def test_conda_base_is_left_alone_and_a_named_environment_wins_over_conda(scratch, tmp_path):
    repo, env = scratch
    base = fake_environment(tmp_path / "conda")
    env |= {"CONDA_PREFIX": str(base), "CONDA_DEFAULT_ENV": "base", "CONDA_EXE": str(base / "bin" / "conda")}
    assert print_env(repo, env) == str(repo / ".venv")
    named = fake_environment(tmp_path / "envs" / "course")
    env["COURSE_ENV"] = str(named)
    assert print_env(repo, env) == str(named)
    assert not (repo / ".venv").exists()


def test_without_a_choice_the_default_is_dot_venv_and_printing_it_creates_nothing(scratch):
    repo, env = scratch
    assert print_env(repo, env) == str(repo / ".venv")
    assert not (repo / ".venv").exists()


def test_a_folder_that_is_not_an_environment_is_refused(scratch, tmp_path):
    repo, env = scratch
    not_an_env = tmp_path / "documents"
    (not_an_env / "notes").mkdir(parents=True)
    env["COURSE_ENV"] = str(not_an_env)
    result = run(["bash", "scripts/setup.sh", "--print-env"], repo, env)
    assert result.returncode != 0
    assert str(not_an_env) in result.stderr and "bin/python" in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("chosen_by", ["COURSE_ENV", "CONDA_PREFIX"])
def test_make_runs_the_chosen_environments_python(scratch, tmp_path, chosen_by):
    repo, env = scratch
    course_env = fake_environment(tmp_path / "envs" / "course")
    env[chosen_by] = str(course_env)
    result = run(["make", "-n", "unit", "nbval"], repo, env)
    assert result.returncode == 0, result.stderr
    assert f"{course_env}/bin/python -m pytest tests" in result.stdout
    assert f"{course_env}/bin/python -m pytest --nbval" in result.stdout


@pytest.fixture
def set_up_in_named_environment(scratch, tmp_path):
    """A whole set-up run into a named environment: (result, the environment's python calls, repo, environment)."""
    repo, env = scratch
    course_env = fake_environment(tmp_path / "envs" / "course")
    env["COURSE_ENV"] = str(course_env)
    result = run(["bash", "scripts/setup.sh"], repo, env)
    calls_log = course_env / "calls.log"
    calls = calls_log.read_text().splitlines() if calls_log.exists() else []
    return result, calls, repo, course_env


def test_set_up_says_which_environment_and_installs_only_there(set_up_in_named_environment):
    result, calls, repo, course_env = set_up_in_named_environment
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(course_env) in result.stdout.splitlines()[0]
    assert not (repo / ".venv").exists()
    installs = [call for call in calls if call.startswith("-m pip install")]
    assert any("-r requirements.txt" in call for call in installs)
    assert any("--no-deps -r requirements-nodeps.txt" in call for call in installs)
    assert any("--no-deps" in call and call.endswith("-e .") for call in installs)
    assert calls[-1] == "-m helpers.assets"


def test_set_up_installs_the_pinned_installer_first_not_the_newest(set_up_in_named_environment):
    result, calls, _, _ = set_up_in_named_environment
    assert result.returncode == 0, result.stdout + result.stderr
    first_install = next(call for call in calls if call.startswith("-m pip install")).split()
    assert "--upgrade" not in first_install and "-U" not in first_install
    pins = exact_pins(REPO / "constraints.txt")
    for name in INSTALLER:
        pinned = f"{name}=={pins[name]}" in first_install
        constrained = name in first_install and "constraints.txt" in first_install
        assert pinned or constrained, f"the first install does not pin {name}: {' '.join(first_install)}"


# --- what users read ----------------------------------------------------------------------------------------------


def test_readme_tells_conda_and_laptop_users_how_to_set_up():
    readme = (REPO / "README.md").read_text()
    assert "conda activate" in readme and "COURSE_ENV=" in readme
    assert "https://download.pytorch.org/whl/cpu" in readme
    assert re.search(r"pip install torch==2\.13\.0 --index-url https://download\.pytorch\.org/whl/cpu", readme)
    # environment.yml leaves every install to `make setup`: a partial pip section is what left conda users
    # without Unsloth, the helpers package and the converted model.
    assert "pip:" not in (REPO / "environment.yml").read_text()


def test_readme_marks_the_gpu_comparison_as_withdrawn():
    readme = (REPO / "docs" / "performance.md").read_text()  # the README's Performance section, on the course site
    paragraph = readme[readme.index("**GPU path"):readme.index("**Retrieval**")]
    assert "WITHDRAWN" in paragraph
    assert "1.67×" not in paragraph
