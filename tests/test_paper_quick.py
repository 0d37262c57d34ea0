"""Smoke test of benchmarks/paper.py --quick: sane output, not paper numbers."""

import json
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "benchmarks"))

import paper  # pylint: disable=g-import-not-at-top,wrong-import-position


def _check_rows(rows, methods):
  for r in rows:
    for key in ("acc", "dense_acc"):
      assert math.isfinite(r[key]) and 0.0 <= r[key] <= 1.0, r
    assert r["nonzero"] <= r["kept"]
    if r["method"] == "gmp_layer":  # floor per layer: at most one short each
      assert 0 <= r["target_kept"] - r["kept"] < len(r["layer_density"])
    else:  # exact global top-Q
      assert r["kept"] == r["target_kept"] == math.floor(
          r["pool"] / r["compression"])
      assert r["density"] == pytest.approx(r["target_kept"] / r["pool"])
  assert {r["method"] for r in rows} == set(methods)


def test_quick_run_writes_sane_results(tmp_path):
  doc = tmp_path / "evidence.md"
  doc.write_text("# Evidence\n\nprose kept\n")
  result = paper.main(["--quick", "--out-dir", str(tmp_path), "--doc",
                       str(doc)])
  rows = result["rows"]
  # lenet300 at 60x and lenet5 at 300x, every method, one seed.
  assert len(rows) == 2 * len(paper.METHODS)
  _check_rows(rows, paper.METHODS)
  saved = json.loads((tmp_path / "paper_quick.json").read_text())
  assert saved["complete"] and len(saved["rows"]) == len(rows)
  for name in ("paper_quick_accuracy.png", "paper_quick_density.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
  text = doc.read_text()
  assert "prose kept" in text and paper.TABLE_BEGIN in text
  assert "| LeNet-5 300x | quick x1 |" in text and "Claims check" in text
  # Rewriting the block replaces it rather than appending a second one.
  paper.write_doc(str(doc), "new table")
  assert doc.read_text().count(paper.TABLE_BEGIN) == 1
  assert "new table" in doc.read_text()
  gsm = [r for r in rows if r["method"] in ("gsm", "gsm_lossless")]
  assert all(np.isfinite(r["max_abs_removed"]) for r in gsm)
  for r in rows:  # every row says under which budget and split it ran
    assert r["protocol"] == "quick" and r["batch_size"] == 32
    assert r["base_steps"] == 60 or r["model"] == "lenet5"
    assert r["val_size"] > 0 and r["test_size"] > 0
    assert 0.0 <= r["val_acc"] <= 1.0
  lossless = [r for r in gsm if r["method"] == "gsm_lossless"]
  # The in-schedule prune leaves nothing for the final prune to remove.
  assert all(r["max_abs_removed"] == 0.0 for r in lossless)
  # --summarize rebuilds the same summary from the JSON without training.
  again = paper.main(["--quick", "--summarize", str(tmp_path / "paper_quick.json"),
                      "--out-dir", str(tmp_path / "again"), "--doc", str(doc)])
  assert again["summary"] == result["summary"]
  assert (tmp_path / "again" / "paper_quick_density.png").exists()


def test_quick_falls_back_to_digits_without_data(tmp_path):
  result = paper.main([
      "--quick", "--data-dir", str(tmp_path / "absent"), "--out-dir",
      str(tmp_path), "--models", "lenet300", "--methods",
      "gsm,magnitude_ft,ticket_gsm"])
  assert result["data"] == "sklearn-digits"
  _check_rows(result["rows"], ("gsm", "magnitude_ft", "ticket_gsm"))


def test_full_run_needs_the_data(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    paper.main(["--data-dir", str(tmp_path), "--out-dir", str(tmp_path)])


@pytest.mark.parametrize("argv, match", [
    (["--models", "resnet"], r"unknown model.*'lenet300', 'lenet5'"),
    (["--methods", "gsm,obs"], r"unknown method.*'gsm', 'gsm_lossless'"),
    (["--methods", "ticket_gsm"], "ticket_gsm needs method gsm"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--prune-steps", "-3"], "--prune-steps must be >= 1"),
    (["--lossless-prune-at", "0"], r"--lossless-prune-at must be in \(0, 1\)"),
    (["--lossless-prune-at", "1"], r"--lossless-prune-at must be in"),
])
def test_bad_arguments(argv, match):
  with pytest.raises(ValueError, match=match):
    paper.make_config(paper.parse_args(argv))


def test_lossless_prune_point():
  """The first lr decay by default; --lossless-prune-at moves it."""
  import paper_protocol  # pylint: disable=g-import-not-at-top
  default = paper.make_config(paper.parse_args([]))
  assert paper_protocol.lossless_prune_step(default, 2800) == 1600
  moved = paper.make_config(paper.parse_args(["--lossless-prune-at", "0.25"]))
  assert paper_protocol.lossless_prune_step(moved, 2800) == 700
