"""Checkpoint and resume a gsm_sgd train state with orbax-checkpoint."""

import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_gsm
from optax_gsm import checkpoint

ocp = pytest.importorskip("orbax.checkpoint")

import _checkpoint_worker as worker  # pylint: disable=g-import-not-at-top

_WORKER = pathlib.Path(__file__).with_name("_checkpoint_worker.py")


def _worker(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, str(_WORKER), *args], env=env,
                        capture_output=True, text=True, timeout=120)


def _save(directory, step, params, opt_state, **hyperparams):
  with ocp.CheckpointManager(directory) as manager:
    checkpoint.save(manager, step, params, opt_state, **hyperparams)


def test_resume_in_a_fresh_process_is_bit_for_bit(tmp_path):
  params, opt = worker.setup()
  state = opt.init(params)
  uninterrupted = worker.train(params, state, opt, 0, 8)
  params, state = worker.train(params, state, opt, 0, 3)
  _save(tmp_path / "ckpt", 3, params, state, compression=worker.COMPRESSION)
  out = tmp_path / "resumed.npz"
  result = _worker("resume", str(tmp_path / "ckpt"), "8", str(out))
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = np.load(out)
  expected = worker.flat({"params": uninterrupted[0],
                          "opt_state": uninterrupted[1]})
  assert set(resumed) == set(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  assert int(uninterrupted[1][0].count) == 8


def test_a_save_killed_part_way_leaves_the_last_good_checkpoint(tmp_path):
  directory = tmp_path / "ckpt"
  result = _worker("die-saving", str(directory))
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  # The save of step 4 had begun and never committed.
  assert [p.name for p in directory.glob("4*")] == ["4.orbax-checkpoint-tmp"]
  params, opt = worker.setup(width=256)
  expected = worker.train(params, opt.init(params), opt, 0, 2)
  with ocp.CheckpointManager(directory) as manager:
    assert manager.all_steps() == [2]
    restored = checkpoint.restore(manager, params, opt,
                                  compression=worker.COMPRESSION)
    jax.tree.map(np.testing.assert_array_equal, restored, expected)
    # Training goes on and saves over the debris.
    checkpoint.save(manager, 4, *restored, compression=worker.COMPRESSION)
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 4]


def test_restoring_another_models_checkpoint_names_the_leaves(tmp_path):
  params, opt = worker.setup(width=64)
  _save(tmp_path, 0, params, opt.init(params), compression=5)
  other, other_opt = worker.setup(width=32)
  with ocp.CheckpointManager(tmp_path) as manager:
    with pytest.raises(ValueError) as error:
      checkpoint.restore(manager, other, other_opt, compression=5)
  message = str(error.value)
  assert ("params ['params']['Dense_0']['kernel']: checkpoint has "
          "[[12, 64], 'float32'], this run has [[12, 32], 'float32']"
          in message)
  assert "opt_state [2].trace['params']['Dense_1']['kernel']" in message


def test_restoring_with_another_compression_names_it(tmp_path):
  params, opt = worker.setup()
  _save(tmp_path, 0, params, opt.init(params), compression=5)
  with ocp.CheckpointManager(tmp_path) as manager:
    with pytest.raises(ValueError, match=(
        "hyperparams compression: checkpoint has 5, this run has 10")):
      checkpoint.restore(manager, params, worker.setup(compression=10)[1],
                         compression=10)
    with pytest.raises(ValueError, match="hyperparams density: in this run"):
      checkpoint.restore(manager, params, opt, compression=5, density=0.2)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      checkpoint.restore(ocp.CheckpointManager(tmp_path / "empty"), params,
                         opt)


def test_state_or_masks_of_other_params_are_rejected():
  params, opt = worker.setup(width=64)
  other, _ = worker.setup(width=32)
  renamed = {"params": {"Dense_0": params["params"]["Dense_0"],
                        "Dense_9": params["params"]["Dense_1"]}}
  state = opt.init(params)
  with pytest.raises(ValueError, match="state does not belong to these"):
    opt.update(renamed, state, renamed)
  with pytest.raises(ValueError, match=r"opt_state \[2\].trace\['params'\]"
                     r"\['Dense_0'\]\['bias'\]: checkpoint has \[\[64\]"):
    checkpoint.check_opt_state(opt, other, state)
  with pytest.raises(ValueError, match="its structure is"):
    checkpoint.check_opt_state(opt, params, state[:2])
  checkpoint.check_opt_state(opt, params, state)  # the right one passes
  _, masks = optax_gsm.prune(params, compression=5)
  with pytest.raises(ValueError, match="stands for a leaf of shape"):
    optax_gsm.keep_masked(masks).init(other)
  with pytest.raises(ValueError, match="masks must match params"):
    optax_gsm.keep_masked(masks).init(renamed)
  with pytest.raises(TypeError, match="hyperparams must be JSON"):
    checkpoint.describe(params, state, compression=jnp.ones(2))


def _distributed_snippets() -> list[str]:
  """The checkpoint snippets of docs/distributed.md, as written."""
  doc = (pathlib.Path(__file__).parents[1] / "docs" / "distributed.md"
         ).read_text()
  section = doc.split("### Checkpoint and resume", 1)[1].split("\n### ", 1)[0]
  return [block.split("```", 1)[0]
          for block in section.split("```python\n")[1:]]


def test_docs_snippet_saves_and_a_fresh_process_restores(tmp_path):
  """docs/distributed.md: the save snippet as a whole script, then the
  restore snippet in a fresh process, in the same working directory."""
  save, restore = _distributed_snippets()
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(
             [str(pathlib.Path(__file__).parents[1]),
              os.environ.get("PYTHONPATH", "")])}
  for script in (save, restore):
    result = subprocess.run([sys.executable, "-c", script], env=env,
                            cwd=tmp_path, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "[8.0, 9.0, 10.0, 11.0]"
  assert not list(tmp_path.glob("gsm_run/*tmp*"))
