"""Trains a small model with gsm_sgd on a mesh; one of N processes or alone.

As a script, ``python _multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT
OUT`` joins a ``jax.distributed`` job on localhost (one CPU device per
process, gloo collectives), trains, and saves the final params to ``OUT``
(``.npz``). ``tests/test_multiprocess.py`` also imports :func:`train` to run
the same training in one process.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optax_gsm
import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import models  # pylint: disable=wrong-import-position

STEPS = 6
BATCH = 64


def _data() -> tuple[np.ndarray, np.ndarray]:
  """The same global batch in every process."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, 12)).astype(np.float32)
  y = (x[:, :4] @ rng.normal(size=(4, 4))).argmax(-1).astype(np.int32)
  return x, y


def _global(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a host array every process holds in full."""
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def make_mesh(devices: list[jax.Device]) -> jax.sharding.Mesh:
  """A 1-D ``"data"`` mesh; Auto axes let XLA place the activations."""
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,),
                       devices=devices)


def train(mesh: jax.sharding.Mesh | None) -> dict[str, np.ndarray]:
  """``STEPS`` steps of gsm_sgd; returns the final params, flattened by path.

  With a mesh the batch and the first kernel's columns are sharded over its
  ``"data"`` axis, so both the gradient mean and GSM's global top-k cross
  devices (and processes); without one everything lives on one device.
  """
  model = models.MLP((32, 4))
  x, y = _data()
  params = jax.tree.map(np.asarray,
                        model.init(jax.random.key(0), jnp.asarray(x[:1])))
  if mesh is not None:
    def spec(path, leaf):
      if "Dense_0" in jax.tree_util.keystr(path) and leaf.ndim == 2:
        return NamedSharding(mesh, P(None, "data"))
      return NamedSharding(mesh, P())
    params = jax.tree.map(_global, params,
                          jax.tree_util.tree_map_with_path(spec, params))
    x = _global(x, NamedSharding(mesh, P("data")))
    y = _global(y, NamedSharding(mesh, P("data")))
  opt = optax_gsm.gsm_sgd(0.1, compression=5, momentum=0.9)

  def loss(p, x, y):
    logits = model.apply(p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(p, s, x, y):
    updates, s = opt.update(jax.grad(loss)(p, x, y), s, p)
    return optax.apply_updates(p, updates), s

  state = opt.init(params)
  for _ in range(STEPS):
    # Block: overlapping steps can deadlock XLA:CPU's in-process collectives.
    params, state = jax.block_until_ready(step(params, state, x, y))
  if mesh is not None and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    params = multihost_utils.process_allgather(params, tiled=True)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
  jax.config.update("jax_num_cpu_devices", 1)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                             num_processes=num_processes,
                             process_id=process_id,
                             initialization_timeout=60)
  mesh = make_mesh(jax.devices())
  np.savez(out, **train(mesh))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
