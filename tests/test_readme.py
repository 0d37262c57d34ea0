"""The README stays short, its code runs, and CI runs its test command."""

import contextlib
import io
import os
import re
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_COMMAND = ('python -m venv .venv && . .venv/bin/activate && '
                'pip install -e ".[test]" && python -m pytest')


def _readme():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    return f.read()


def _blocks(text, language):
  return re.findall(rf"^```{language}\n(.*?)^```$", text,
                    re.MULTILINE | re.DOTALL)


def _prose_lines(text):
  """(number, line) outside fenced code blocks."""
  inside = False
  for number, line in enumerate(text.splitlines(), 1):
    if line.startswith("```"):
      inside = not inside
    elif not inside:
      yield number, line


def test_readme_reads_in_five_minutes():
  text = _readme()
  assert len(text.splitlines()) <= 150
  long = [f"line {n}: {len(line)} characters"
          for n, line in _prose_lines(text) if len(line) > 200]
  assert not long, long


def test_readme_gives_the_two_setup_commands_first():
  head = "\n".join(_readme().splitlines()[:12])
  assert TEST_COMMAND in head
  assert "python examples/demo_digits.py" in head


def test_ci_runs_the_readme_test_command():
  """.ci/run installs the test extra and runs plain pytest, as the README."""
  with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
    lines = [line.strip() for line in f if line.strip()
             and not line.lstrip().startswith("#")]
  assert "python3 -m venv .ci-venv" in lines
  assert 'python -m pip install -q -e ".[test]"' in lines
  assert lines[-1] == TEST_COMMAND.split(" && ")[-1]


def test_readme_names_the_placeholder_sections():
  text = _readme()
  for title, doc in (("Deep networks", "docs/deep_networks.md"),
                     ("Accelerators", "docs/accelerators.md")):
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    assert doc in section


def test_readme_documents_the_api_build_command():
  assert ("sphinx-build -W -b html docs/api docs/_build/html"
          in "\n".join(_blocks(_readme(), "bash")))


@pytest.mark.parametrize("index", [0, 1])
def test_readme_python_blocks_run(index):
  blocks = _blocks(_readme(), "python")
  assert len(blocks) == 2, "the NNX and the Linen quick starts"
  out = io.StringIO()
  with contextlib.redirect_stdout(out), warnings.catch_warnings():
    warnings.simplefilter("error")  # the quick starts must not warn
    exec(compile(blocks[index], f"README.md python block {index}", "exec"),
         {"__name__": f"readme_block_{index}"})
  printed = out.getvalue()
  assert "compression 10.00x" in printed, printed  # the sparsity report
  assert "kernel" in printed and "params/" not in printed, printed
