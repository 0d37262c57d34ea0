"""Smoke test of benchmarks/peers.py: runs end to end, not timings.

The JAX rows run without torch (CI installs only ``.[test]``); the checks of
the PyTorch peer are skipped when torch is absent.
"""

import json
import os
import sys

import jax
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from benchmarks import peers  # pylint: disable=wrong-import-position
import optax_gsm  # pylint: disable=wrong-import-position


def test_jax_rows_without_torch(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(peers, "torch", None)  # as in CI, torch or not
  out = tmp_path / "peers.json"
  result = peers.main(["--sizes", "266K", "--repeats", "2",
                       "--reference-max", "0", "--out", str(out)])
  assert "pip install" in capsys.readouterr().out  # says how to get torch
  rows = result["rows"]
  assert {r["method"] for r in rows} == {peers.BASELINE, "gsm_sgd"}
  for r in rows:
    assert r["params"] == 266_610 and r["median_ms"] > 0
    assert r["q25_ms"] <= r["median_ms"] <= r["q75_ms"]
    assert r["over_torch_gsm_sgd"] is None
  saved = json.loads(out.read_text())
  assert saved["complete"] and len(saved["rows"]) == len(rows)
  assert saved["versions"]["torch"] is None and saved["command"]
  assert saved["mask_checks"][0]["optax_gsm_kept"] == int(
      (784 * 300 + 300 * 100 + 100 * 10) / 5)
  assert (tmp_path / "peers.png").read_bytes()[:4] == b"\x89PNG"


def test_torch_peer_matches_gsm_sgd():
  """Same kept set as optax_gsm on tie-free input, and the same first step."""
  pytest.importorskip("torch")
  shapes = peers.lenet300_shapes()
  params = peers.random_tree(shapes, seed=0)
  grads = peers.random_tree(shapes, seed=1, scale=1e-2)
  check = peers.check_masks(params, grads, 5.0)
  assert check["entries_equal_threshold"] == 1  # tie-free at the threshold
  assert check["same_kept_set"]
  assert check["torch_kept"] == check["optax_gsm_kept"] == check["k"]

  lr, mom, wd = 1e-2, 0.99, 1e-4
  step = peers.TorchStep([np.array(x) for x in jax.tree.leaves(params)],
                         [np.array(x) for x in jax.tree.leaves(grads)],
                         lr, mom, wd, compression=5.0)
  step()
  step()  # the second step goes through the momentum buffer
  opt = optax_gsm.gsm_sgd(lr, compression=5, momentum=mom, weight_decay=wd)
  state, p = opt.init(params), params
  update = jax.jit(opt.update)
  for _ in range(2):
    updates, state = update(grads, state, p)
    p = optax.apply_updates(p, updates)
  for ours, theirs in zip(jax.tree.leaves(p), step.params):
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(),
                               rtol=1e-6, atol=1e-7)
