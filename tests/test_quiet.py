"""Nothing fails silently: warnings stay visible, and only named, known-noisy lines are dropped."""
import os
import subprocess
import sys

import pytest

from helpers import quiet


def test_importing_the_course_mutes_no_warnings():
    # In a fresh process with Python's default filters: no catch-all "ignore" may be left behind by any stage.
    probe = ("import warnings, helpers.models, helpers.retrieval, helpers.training, helpers.evaluation\n"
             "print([f for f in warnings.filters if f[0] == 'ignore' and f[1] is None and f[2] is Warning])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"})
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert os.environ.get("PYTHONWARNINGS") != "ignore"


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


def test_printed_lines_pass_through_while_the_block_runs(capsys):
    with quiet.without_printed_noise():
        print("downloading 3 of 4 shards")
        assert capsys.readouterr().out == "downloading 3 of 4 shards\n"


def test_output_is_written_even_when_the_block_raises(capsys):
    with pytest.raises(RuntimeError), quiet.without_printed_noise():
        print("written before the error")
        raise RuntimeError("load failed")
    assert capsys.readouterr().out == "written before the error\n"


def test_notebooks_ignore_only_the_named_warnings():
    probe = (
        "import sys, types, warnings; sys.modules['ipykernel'] = types.ModuleType('ipykernel'); import helpers\n"
        "helpers.config.active_profile(verbose=False)\n"
        "warnings.warn('IProgress not found. Please update jupyter and ipywidgets.')\n"
        "warnings.warn('an unnamed warning stays visible')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "IProgress" not in result.stderr
    assert "an unnamed warning stays visible" in result.stderr


def test_scripts_see_the_named_warnings_too():
    probe = "import warnings, helpers; helpers.config.active_profile(); warnings.warn('IProgress not found. Please update jupyter and ipywidgets.')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "IProgress not found" in result.stderr


def test_notebook_warnings_look_the_same_with_and_without_ci():
    # CI=true makes transformers propagate its records to the root logger, and Jupyter printed them twice.
    probe = ("import sys, types; sys.modules['ipykernel'] = types.ModuleType('ipykernel')\n"
             "import helpers.models, transformers.utils.logging as tl\n"
             "print(tl._get_library_root_logger().propagate)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={**os.environ, "CI": "true"})
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_bitsandbytes_optional_kernel_message_is_dropped_through_its_own_logger():
    # The message bitsandbytes logs on import on AVX512-BF16 CPUs (bitsandbytes/backends/cpu/ops.py), emitted here
    # through the same logger on any CPU; another message of that logger still shows.
    probe = (
        "import logging, sys; logging.basicConfig(stream=sys.stderr)\n"
        "import helpers.models\n"
        "logger = logging.getLogger('bitsandbytes.backends.cpu.ops')\n"
        "logger.warning('Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
        "`pip install kernels` and the kernels >= 0.11.1', ModuleNotFoundError(\"No module named 'kernels'\"))\n"
        "logger.warning('another bitsandbytes warning stays visible')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "gemm_4bit_forward" not in result.stderr
    assert "another bitsandbytes warning stays visible" in result.stderr


def test_importing_bitsandbytes_logs_nothing_on_this_cpu():
    # On an AVX512-BF16 CPU this is where the message appeared (first cell of notebooks 02-07); on others it never does.
    result = subprocess.run([sys.executable, "-c", "import helpers.models"], capture_output=True, text=True, check=True)
    assert "kernels-community" not in result.stderr
