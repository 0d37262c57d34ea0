"""Smoke test of benchmarks/deep.py --quick: sane output, not real numbers."""

import json
import math
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from benchmarks import deep  # pylint: disable=wrong-import-position


def test_quick_run_writes_sane_resumable_results(tmp_path, capsys):
  argv = ["--quick", "--no-progress", "--out", str(tmp_path / "out"),
          "--cache", str(tmp_path / "cache")]
  with warnings.catch_warnings():  # a few steps cannot reach the decay
    warnings.simplefilter("ignore", UserWarning)
    results = deep.main(argv)
  assert set(results) == {"resnet20", "vit"}
  for net, entry in results.items():
    assert set(entry["methods"]) == set(deep.METHODS)
    # The pool is the kernels: no bias, norm or positional table.
    assert all(p.endswith("kernel") for p in entry["pooled_leaves"])
    assert "pos" not in entry["pooled_leaves"]
    for method, row in entry["methods"].items():
      for key in ("before_prune", "after_prune", "after_prune_recal"):
        if key == "after_prune_recal" and net == "vit":
          assert key not in row  # no batch norm
          continue
        for split in ("val", "test"):
          assert 0.0 <= row[key][split] <= 1.0
      kept = sum(layer["kept"] for layer in row["layers"])  # of the masks
      assert kept == math.floor(entry["pool"] / 10)  # global top-Q of prune
      if method == "gsm_prune_step":
        # The in-training prune left nothing for the final prune to remove.
        assert row["entries_zeroed_by_prune"] == 0
    assert (tmp_path / "out" / f"{net}_s0.json").exists()
  assert (tmp_path / "out" / "densities_s0.png").read_bytes()[:4] == \
      b"\x89PNG"
  assert "| resnet20 | GSM, prune_step" in capsys.readouterr().out
  # A second run finds every run done: same numbers, nothing retrained.
  again = deep.main(argv)
  assert json.dumps(again, sort_keys=True) == json.dumps(results,
                                                         sort_keys=True)
  out = capsys.readouterr().out
  assert "resumed at step 4/4" in out and "loss=" not in out
