"""The built wheel carries the licence and the typing marker."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import optax_gsm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setuptools_at_least(major):
  try:
    version = importlib.metadata.version("setuptools")
  except importlib.metadata.PackageNotFoundError:
    return False
  return int(version.split(".")[0]) >= major


def _source_copy(dest):
  """What a build reads, copied: no stale build/ or egg-info of the clone."""
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(os.path.join(ROOT, name), dest / name)
  shutil.copytree(os.path.join(ROOT, "optax_gsm"), dest / "optax_gsm",
                  ignore=shutil.ignore_patterns("__pycache__"))
  return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("wheel")
  source = _source_copy(tmp_path_factory.mktemp("source"))
  command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
             "--no-index", "-w", str(out), "-q"]
  if _setuptools_at_least(77):  # the [test] extra installs it: no network
    command.append("--no-build-isolation")
  else:  # pip would have to fetch the build backend
    pytest.skip("building the wheel offline needs setuptools>=77 installed "
                '(pip install -e ".[test]" installs it)')
  done = subprocess.run(command, capture_output=True, text=True, check=False,
                        env=dict(os.environ, PIP_NO_INPUT="1"))
  assert done.returncode == 0, done.stdout + done.stderr
  wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
  assert len(wheels) == 1, wheels
  with zipfile.ZipFile(os.path.join(out, wheels[0])) as z:
    return wheels[0], z.namelist(), {n: z.read(n) for n in z.namelist()
                                     if n.endswith(("METADATA", "LICENSE"))}


def test_wheel_carries_license_and_py_typed(wheel):
  name, files, _ = wheel
  assert f"optax_gsm-{optax_gsm.__version__}-" in name
  assert "optax_gsm/py.typed" in files
  licenses = [f for f in files if f.endswith(".dist-info/licenses/LICENSE")]
  assert licenses, files


def test_wheel_license_is_the_repository_apache_text(wheel):
  _, files, contents = wheel
  (path,) = [f for f in files if f.endswith(".dist-info/licenses/LICENSE")]
  with open(os.path.join(ROOT, "LICENSE"), "rb") as f:
    assert contents[path] == f.read()
  assert b"Apache License\n                           Version 2.0" in (
      contents[path])
  (metadata,) = [f for f in files if f.endswith(".dist-info/METADATA")]
  text = contents[metadata].decode()
  assert "License-Expression: Apache-2.0" in text
  assert "License-File: LICENSE" in text


def test_wheel_holds_the_library_only(wheel):
  """Examples, benchmarks and tests stay in the repository."""
  _, files, _ = wheel
  tops = {f.split("/")[0] for f in files}
  assert tops == {"optax_gsm", f"optax_gsm-{optax_gsm.__version__}.dist-info"}


def test_version_has_one_source():
  with open(os.path.join(ROOT, "pyproject.toml")) as f:
    text = f.read()
  assert 'dynamic = ["version"]' in text
  assert "optax_gsm._version.__version__" in text
  assert "\nversion =" not in text.split("[tool.setuptools.dynamic]")[0]


def test_sdist_carries_license_and_py_typed(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  _source_copy(source)
  if not _setuptools_at_least(77):
    pytest.skip('building the sdist needs setuptools>=77 installed '
                '(pip install -e ".[test]" installs it)')
  script = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_sdist(sys.argv[1]))")
  done = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                        cwd=source, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  name = done.stdout.split()[-1]
  with tarfile.open(tmp_path / name) as t:
    files = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
  assert {"LICENSE", "optax_gsm/py.typed", "pyproject.toml"} <= files
