"""Nothing fails silently: warnings stay visible, and only named, known-noisy lines are dropped."""
import os
import subprocess
import sys
import warnings

import pytest

import helpers
from helpers import quiet


def test_importing_helpers_mutes_no_warnings():
    helpers.models  # noqa: B018  (imports Unsloth, transformers, TRL, PEFT)
    helpers.retrieval  # noqa: B018
    assert "PYTHONWARNINGS" not in os.environ or os.environ["PYTHONWARNINGS"] != "ignore"
    with pytest.warns(UserWarning, match="still visible"):
        warnings.warn("still visible", UserWarning)


def test_child_processes_inherit_no_warning_filter():
    probe = "import helpers.models, warnings; warnings.warn('seen by a child process')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "seen by a child process" in result.stderr


def test_a_warning_from_the_course_code_fails_the_tests():
    # pyproject's filterwarnings turns warnings raised in helpers.* into errors.
    code = compile("import warnings\nwarnings.warn('a helpers bug')", "helpers_probe", "exec")
    with pytest.raises(UserWarning):
        exec(code, {"__name__": "helpers.probe"})


def test_only_the_named_unsloth_lines_are_dropped(capsys):
    with quiet.without_printed_noise():
        print("Unsloth 2026.10.9: no GPU found, training on CPU (x86_64, 2 threads, bfloat16 = False).")
        print("Unsloth (CPU): LlamaForCausalLM on 2 CPU threads. dtype = torch.float32")
        print("Unsloth: input of 400 tokens is longer than max_seq_length = 256")
        print("a real problem", file=sys.stderr)
    printed = capsys.readouterr()
    assert printed.out == "Unsloth: input of 400 tokens is longer than max_seq_length = 256\n"
    assert printed.err == "a real problem\n"


def test_output_held_back_is_written_even_when_the_block_raises(capsys):
    with pytest.raises(RuntimeError), quiet.without_printed_noise():
        print("written before the error")
        raise RuntimeError("load failed")
    assert capsys.readouterr().out == "written before the error\n"


def test_notebooks_ignore_only_the_named_warnings():
    probe = (
        "import sys, types, warnings; sys.modules['ipykernel'] = types.ModuleType('ipykernel'); import helpers\n"
        "warnings.warn('IProgress not found. Please update jupyter and ipywidgets.')\n"
        "warnings.warn('an unnamed warning stays visible')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "IProgress" not in result.stderr
    assert "an unnamed warning stays visible" in result.stderr


def test_scripts_see_the_named_warnings_too():
    probe = "import warnings, helpers; warnings.warn('IProgress not found. Please update jupyter and ipywidgets.')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "IProgress not found" in result.stderr
