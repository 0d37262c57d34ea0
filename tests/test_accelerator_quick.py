"""benchmarks/accelerator.py --quick runs end to end on the CPU."""

import json
import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_benchmark_quick(tmp_path):
  out = tmp_path / "accelerator.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device, as a plain run sees it
  run = subprocess.run(
      [sys.executable, os.path.join(_ROOT, "benchmarks", "accelerator.py"),
       "--quick", "--out", str(out)],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(out.read_text())
  assert (tmp_path / "accelerator.png").stat().st_size > 0
  assert result["device"]["backend"] == "cpu"
  selection = result["selection"]
  assert [r["n"] for r in selection] == [4096, 65536]
  for row in selection:
    # Every method gave the same mask, and every method was timed.
    assert row["masks_agree"] is True
    assert {"read", "histogram", "radix_count b=1", "radix_count b=4",
            "radix_count b=8", "top_k", "sort"} <= set(row["ms"])
    assert row["passes"]["radix_count b=4"] == 9
    assert all(t > 0 for t in row["ms"].values())
  (update,) = result["update"]
  assert set(update["ms"]) == {"sgd", "gsm_sgd auto", "gsm_sgd histogram",
                               "gsm_sgd radix_count"}
  assert result["resnet50"]["ms"]["gsm_sgd"] > 0
  assert "skipped" in result["torch_peer"]  # no CUDA here
  assert "| selection N |" in run.stdout and "device: cpu" in run.stdout
