"""The repository speaks for itself: no machine paths, no missing documents.

Every tracked text file (``git ls-files``) is read. A reader of the
repository has neither this machine's folders nor the notes and issue tracker
the work was planned in, so neither may be named; links between the
repository's own Markdown files must resolve.
"""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Absolute paths of one machine: a work or temporary folder, a home folder.
MACHINE_PATH = re.compile(
    r"(?<![\w.~:/-])/(?:work|tmp|home|root|Users|mnt|scratch|data|opt|srv|var"
    r"|usr)/[^\s\"'`)]*")
# Allowed absolute paths, each with why.
ALLOWED_PATHS = {
    # The Debian package dataset-fashion-mnist installs the IDX files here;
    # examples.common.datasets reads it by default, .ci/run installs it.
    "/usr/share/datasets/fashion-mnist",
    # A script's interpreter line, the same on every machine.
    "/usr/bin/env",
}
# Documents that exist only where the work was planned.
MISSING_DOCUMENT = re.compile(
    r"\b(?:gsm|selection|ecosystem|style)\.md\b|shared[/]reference"
    r"|\b[Ii]ssues? #?\d+|(?<![\w/])#\d{1,4}\b(?=[ ),.;:]|$)", re.MULTILINE)
# [text](target) in Markdown.
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _tracked_text_files():
  try:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
  except (OSError, subprocess.CalledProcessError) as e:
    pytest.skip(f"not a git checkout ({e}); nothing to scan")
  files = {}
  for name in filter(None, names):
    path = os.path.join(ROOT, name)
    if not os.path.isfile(path):  # deleted in the work tree
      continue
    with open(path, "rb") as f:
      data = f.read()
    if b"\0" in data:  # binary: PNG, NPZ
      continue
    try:
      files[name] = data.decode("utf-8")
    except UnicodeDecodeError:
      continue
  assert files, "git ls-files listed no text file"
  return files


@pytest.fixture(scope="module")
def text_files():
  return _tracked_text_files()


def _hits(files, pattern, allowed=()):
  hits = []
  for name, text in sorted(files.items()):
    for number, line in enumerate(text.splitlines(), 1):
      for match in pattern.finditer(line):
        found = match.group(0).rstrip(".,;:")
        if not any(found.startswith(a) for a in allowed):
          hits.append(f"{name}:{number}: {found}")
  return hits


def test_no_machine_paths(text_files):
  hits = _hits(text_files, MACHINE_PATH, ALLOWED_PATHS)
  assert not hits, "machine-specific paths:\n" + "\n".join(hits)


def test_no_references_to_documents_the_repository_lacks(text_files):
  hits = _hits(text_files, MISSING_DOCUMENT)
  assert not hits, "references outside the repository:\n" + "\n".join(hits)


def test_markdown_links_resolve(text_files):
  broken = []
  for name, text in sorted(text_files.items()):
    if not name.endswith(".md"):
      continue
    for number, line in enumerate(text.splitlines(), 1):
      for target in MARKDOWN_LINK.findall(line):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
          continue  # a web address or an anchor on the same page
        path = os.path.normpath(os.path.join(os.path.dirname(name),
                                             target.split("#")[0]))
        if not os.path.exists(os.path.join(ROOT, path)):
          broken.append(f"{name}:{number}: {target}")
  assert not broken, "links to files the repository lacks:\n" + "\n".join(
      broken)


# The samples are spelled in pieces so that this file passes its own scan.
@pytest.mark.parametrize("line, bad", [
    ("see /" + "work/shared/" + "reference/gsm" + ".md section 6", True),
    ("python x.py --out /" + "tmp/run", True),
    ("the notes in shared/" + "reference", True),
    ("~/data and ./runs and runs/full", False),
    ("load_idx_dataset('/usr/share/datasets/fashion-mnist')", False),
    ("load_idx_dataset('/" + "usr/share/other')", True),
    ("found in iss" + "ue 9, fixed in #" + "12.", True),
    ("fixed in #" + "12", True),
    ("the issue is Q = 0", False),
])
def test_the_patterns_catch_what_they_should(line, bad):
  files = {"x.md": line}
  found = (_hits(files, MACHINE_PATH, ALLOWED_PATHS)
           + _hits(files, MISSING_DOCUMENT))
  assert bool(found) == bad, found
