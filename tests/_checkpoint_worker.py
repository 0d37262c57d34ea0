"""Trains with gsm_sgd and checkpoints; run by tests/test_checkpoint.py.

``python _checkpoint_worker.py resume DIR STEPS OUT`` restores the latest
checkpoint in ``DIR`` in this fresh process, trains on to ``STEPS`` and saves
the params and optimizer state to ``OUT`` (``.npz``).

``python _checkpoint_worker.py die-saving DIR`` saves a checkpoint at step 2,
trains to step 4, starts saving it and kills itself (SIGKILL) before that
save can finish.
"""

from __future__ import annotations

import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import optax_gsm
from optax_gsm import checkpoint

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import models  # pylint: disable=wrong-import-position

COMPRESSION = 5


def setup(width: int = 64, compression: float = COMPRESSION):
  """The model's initial params and its optimizer."""
  model = models.MLP((width, 4))
  params = model.init(jax.random.key(0), jnp.zeros((1, 12)))
  return params, optax_gsm.gsm_sgd(0.05, compression=compression,
                                   momentum=0.9)


def _batch(step: int) -> tuple[jax.Array, jax.Array]:
  """The batch of a step: the data stream is a function of the step."""
  x = jax.random.normal(jax.random.key(step), (32, 12))
  return x, jnp.argmax(x[:, :4], -1)


def train(params, opt_state, opt, start: int, stop: int):
  """Steps ``start .. stop - 1``."""
  model = models.MLP((params["params"]["Dense_0"]["kernel"].shape[1], 4))

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits = model.apply(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    updates, opt_state = opt.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for i in range(start, stop):
    params, opt_state = step(params, opt_state, *_batch(i))
  return params, opt_state


def flat(tree) -> dict[str, np.ndarray]:
  """Leaves by path, for np.savez and comparison."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def resume(directory: str, steps: int, out: str) -> None:
  params, opt = setup()
  with ocp.CheckpointManager(directory) as manager:
    start = manager.latest_step()
    params, opt_state = checkpoint.restore(manager, params, opt,
                                           compression=COMPRESSION)
  params, opt_state = train(params, opt_state, opt, start, steps)
  np.savez(out, **flat({"params": params, "opt_state": opt_state}))


def die_saving(directory: str) -> None:
  params, opt = setup(width=256)
  opt_state = opt.init(params)
  manager = ocp.CheckpointManager(directory)
  params, opt_state = train(params, opt_state, opt, 0, 2)
  checkpoint.save(manager, 2, params, opt_state, compression=COMPRESSION)
  manager.wait_until_finished()
  params, opt_state = train(params, opt_state, opt, 2, 4)
  checkpoint.save(manager, 4, params, opt_state, compression=COMPRESSION)
  print("killing myself during the save of step 4", flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
  if sys.argv[1] == "resume":
    resume(sys.argv[2], int(sys.argv[3]), sys.argv[4])
  elif sys.argv[1] == "die-saving":
    die_saving(sys.argv[2])
  else:
    raise SystemExit(f"unknown mode {sys.argv[1]!r}")
