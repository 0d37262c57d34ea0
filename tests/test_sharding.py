"""gsm_sgd on 8 CPU devices (conftest.py): model- and data-parallel."""

import math
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optax_gsm

_COLLECTIVE = re.compile(
    r"=\s*(?P<type>.*?)\s+(?P<op>all-gather|all-reduce|all-to-all|"
    r"collective-permute|reduce-scatter|collective-broadcast)(-start)?\(")
_ARRAY = re.compile(r"[a-z]+\d*\[([\d,]*)\]")


def _collectives(hlo: str) -> list[tuple[str, int]]:
  """(op, largest element count among its results) for each collective."""
  found = []
  for line in hlo.splitlines():
    match = _COLLECTIVE.search(line)
    if match:
      sizes = [math.prod(int(d) for d in dims.split(",") if d)
               for dims in _ARRAY.findall(match["type"])]
      found.append((match["op"], max(sizes, default=0)))
  return found


def test_collectives_parser():
  hlo = """
  %all-reduce = u32[65536]{0} all-reduce(%wrapped_scatter.4), channel_id=2
  %ag = f32[256,512]{1,0} all-gather-start(%p), dimensions={0}
  %t = (u32[], u32[]) all-reduce(%a, %b), channel_id=17
  %fusion = f32[8] fusion(%all-reduce), kind=kLoop
  """
  assert _collectives(hlo) == [("all-reduce", 65536), ("all-gather", 131072),
                               ("all-reduce", 1)]


def _mlp_params():
  """Two dense layers, 2 * 2**15 kernel entries."""
  keys = jax.random.split(jax.random.key(0), 4)
  return {
      "l1": {"kernel": jax.random.normal(keys[0], (128, 256)),
             "bias": jax.random.normal(keys[1], (256,))},
      "l2": {"kernel": jax.random.normal(keys[2], (256, 128)),
             "bias": jax.random.normal(keys[3], (128,))},
  }


_SPECS = {"l1": {"kernel": P("data", "model"), "bias": P("model")},
          "l2": {"kernel": P("model", "data"), "bias": P()}}


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), 4)
  keys = jax.tree.unflatten(jax.tree.structure(params), list(keys))
  return jax.tree.map(lambda k, x: jax.random.normal(k, x.shape), keys, params)


def _run(opt, params, steps):
  """A few jitted steps on fixed gradients; returns (updates, state) per step."""
  step = jax.jit(opt.update)
  state = opt.init(params)
  history = []
  for seed in range(steps):
    # Block: overlapping steps can deadlock XLA:CPU's in-process collectives.
    updates, state = jax.block_until_ready(
        step(_grads(params, seed), state, params))
    history.append((updates, state))
    params = optax.apply_updates(params, updates)
  return history


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_model_parallel_matches_single_device(axis_type):
  assert jax.device_count() == 8, "conftest.py sets 8 CPU devices"
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), _SPECS,
                           is_leaf=lambda x: isinstance(x, P))
  params = _mlp_params()
  # No weight decay: the first update, -lr * B * g, is zero exactly off the
  # mask B.
  opt = optax_gsm.gsm_sgd(0.01, compression=10, momentum=0.9,
                          weight_decay=0.0)
  single = _run(opt, params, steps=2)
  sharded = _run(opt, jax.device_put(params, shardings), steps=2)
  masks = jax.tree.map(lambda u: np.asarray(u != 0), sharded[0][0])
  assert masks["l1"]["kernel"].sum() + masks["l2"]["kernel"].sum() == (
      2 * 128 * 256 // 10)
  for (u_single, s_single), (u_sharded, s_sharded) in zip(single, sharded):
    jax.tree.map(np.testing.assert_array_equal, u_sharded, u_single)
    assert (jax.tree.map(int, s_sharded[0].active)
            == jax.tree.map(int, s_single[0].active))
    # The momentum keeps the params' shardings; counts are replicated.
    for trace, sharding in zip(jax.tree.leaves(s_sharded[2].trace),
                               jax.tree.leaves(shardings)):
      assert trace.sharding.is_equivalent_to(sharding, trace.ndim)
    for count in jax.tree.leaves(s_sharded[0]):
      assert count.sharding.is_fully_replicated
    for update, sharding in zip(jax.tree.leaves(u_sharded),
                                jax.tree.leaves(shardings)):
      assert update.sharding.is_equivalent_to(sharding, update.ndim)


def _compiled_collectives(mesh, rows: int, selection: str = "auto",
                          ) -> list[tuple[str, int]]:
  """Collectives of a jitted gsm_sgd step on two sharded rows x 1024 kernels.

  Only compiled (from ShapeDtypeStructs), never run, so the pool can be big.
  """
  specs = {"l1": {"kernel": P("data", "model"), "bias": P("model")},
           "l2": {"kernel": P("model", "data"), "bias": P()}}
  shapes = {"l1": {"kernel": (rows, 1024), "bias": (1024,)},
            "l2": {"kernel": (1024, rows), "bias": (rows,)}}
  params = jax.tree.map(
      lambda shape, spec: jax.ShapeDtypeStruct(
          shape, jnp.float32, sharding=NamedSharding(mesh, spec)),
      shapes, specs, is_leaf=lambda x: isinstance(x, tuple))
  opt = optax_gsm.gsm_sgd(0.01, compression=10, selection=selection)
  state = jax.eval_shape(opt.init, params)
  hlo = jax.jit(opt.update).lower(params, state, params).compile().as_text()
  return _collectives(hlo)


@pytest.mark.parametrize("selection", ["histogram", "radix_count"])
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_compiled_step_reduces_histograms_and_gathers_no_params(axis_type,
                                                                selection):
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
  small = _compiled_collectives(mesh, 2048, selection)  # pool 2 * 2**21
  large = _compiled_collectives(mesh, 8192, selection)  # pool 2 * 2**23
  assert small, "a sharded global top-k must communicate"
  # Selection must work on each leaf in place: no flattening, slicing or
  # concatenating of sharded leaves, which would gather them.
  assert {op for op, _ in small + large} == {"all-reduce"}, small
  # Only histograms are reduced: their size is bounded and does not grow
  # with the params (each kernel holds 2**21 or 2**23 entries).
  largest = max(size for _, size in small)
  assert largest == max(size for _, size in large)
  assert largest <= 1 << 20, small


def test_data_parallel_replicas_build_the_same_mask():
  mesh = jax.make_mesh((8,), ("data",))
  keys = jax.random.split(jax.random.key(1), 3)
  params = {"w": jax.random.normal(keys[0], (16, 32)),
            "b": jnp.zeros(32)}
  x = jax.random.normal(keys[1], (64, 16))
  y = jax.random.normal(keys[2], (64, 32))
  # No decay: the first step is -lr * B * g, zero exactly off the mask.
  opt = optax_gsm.gsm_sgd(0.1, compression=8, weight_decay=0.0)

  def loss(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

  @jax.jit
  @partial(jax.shard_map, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")),
           out_specs=(P(), P("data"), P("data")))
  def step(params, state, x, y):
    grads = jax.lax.pmean(jax.grad(loss)(params, x, y), "data")
    updates, state = opt.update(grads, state, params)
    mask = (updates["w"] != 0)[None]  # one per replica, stacked
    return optax.apply_updates(params, updates), mask, grads["w"][None]

  x, y = jax.device_put((x, y), NamedSharding(mesh, P("data")))
  state = opt.init(params)
  _, masks, grads = step(params, state, x, y)
  masks, grads = np.asarray(masks), np.asarray(grads)
  assert masks.shape == (8, 16, 32)
  for replica in range(1, 8):
    np.testing.assert_array_equal(masks[replica], masks[0])
    np.testing.assert_array_equal(grads[replica], grads[0])
  assert masks[0].sum() == 16 * 32 // 8
  # The same mask as one device computes from the averaged gradient.
  updates, _ = jax.jit(opt.update)({"w": grads[0], "b": jnp.zeros(32)}, state,
                                   params)
  np.testing.assert_array_equal(np.asarray(updates["w"] != 0), masks[0])
