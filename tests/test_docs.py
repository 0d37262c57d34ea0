"""The API reference covers the public names and builds without warnings."""

import os
import re
import subprocess
import sys

import pytest

import optax_gsm
from optax_gsm import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(ROOT, "docs", "api")


def _directives():
  """{(module, name)} of every autodoc directive under docs/api."""
  found = set()
  for page in sorted(os.listdir(API)):
    if not page.endswith(".rst"):
      continue
    module = None
    with open(os.path.join(API, page), encoding="utf-8") as f:
      for line in f:
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
          module = m.group(1)
        elif m := re.match(r"\.\. auto(?:function|class):: (\S+)", line):
          found.add((module, m.group(1)))
  return found


def test_every_public_name_has_a_reference_entry():
  documented = {name for module, name in _directives()
                if module == "optax_gsm"}
  public = set(optax_gsm.__all__) - {"checkpoint"}  # a module: its own page
  assert public - documented == set()
  assert documented - public == set()  # no private name in the reference


def test_the_checkpoint_page_documents_its_functions():
  documented = {name for module, name in _directives()
                if module == "optax_gsm.checkpoint"}
  assert {"save", "restore"} <= documented
  assert all(callable(getattr(checkpoint, n)) for n in documented)


def test_the_reference_builds_without_warnings(tmp_path):
  pytest.importorskip("sphinx", reason='the docs extra is not installed '
                      '(pip install -e ".[docs]")')
  pytest.importorskip("sphinx_book_theme", reason="the docs extra is not "
                      'installed (pip install -e ".[docs]")')
  done = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", API,
       str(tmp_path / "html")], cwd=ROOT, capture_output=True, text=True,
      check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  assert (tmp_path / "html" / "transformations.html").exists()


def test_paper_summaries_go_to_the_docs_never_the_readme(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  try:
    import paper_report  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  assert paper_report.EVIDENCE_DOC == os.path.join(ROOT, "docs",
                                                   "evidence.md")
  with open(paper_report.EVIDENCE_DOC, encoding="utf-8") as f:
    text = f.read()
  assert text.count(paper_report.TABLE_BEGIN) == 1
  assert text.count(paper_report.TABLE_END) == 1
  readme = tmp_path / "README.md"
  readme.write_text("# x\n")
  with pytest.raises(ValueError, match="README keeps a compact table"):
    paper_report.write_doc(str(readme), "table")
  assert readme.read_text() == "# x\n"
