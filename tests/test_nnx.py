"""Flax NNX: nnx.Optimizer, nnx.State masks, reports, checkpoints, example."""

import os
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_gsm

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples", "nnx_fashion_mnist.py")


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


X = jax.random.normal(jax.random.key(1), (32, 8))
Y = jnp.arange(32) % 3
POOL = 8 * 16 + 16 * 3  # the two kernels


def loss_fn(model):
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      model(X), Y).mean()


@nnx.jit
def train_step(model, optimizer):
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


def params_of(model):
  return nnx.state(model, nnx.Param)


def kernels(model):
  return [np.asarray(model.l1.kernel[...]), np.asarray(model.l2.kernel[...])]


def test_optimizer_gsm_sgd_matches_functional_optax():
  model = MLP(nnx.Rngs(0))
  graphdef, start = nnx.split(model)
  params = nnx.as_pure(start)  # arrays, before the model trains in place
  tx = optax_gsm.gsm_sgd(0.05, compression=4)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  losses = [float(train_step(model, optimizer)) for _ in range(5)]

  @jax.jit
  def step(params, state):  # the same steps, functionally
    grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p)))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(5):
    params, state = step(params, state)
  assert losses[-1] < losses[0]
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_of(model))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(state[0].active),
                  jax.tree.leaves(optimizer.opt_state[0].active)):
    assert int(a) == int(b) == int(jnp.sum(a))
  metrics = optax_gsm.gsm_metrics(optimizer, params_of(model))
  assert metrics["gsm/step"] == 5 and metrics["gsm/active"] == POOL // 4
  assert set(metrics) >= {"gsm/density/l1/kernel", "gsm/density/l2/kernel"}


def test_optimizer_with_gsm_in_a_chain_moves_only_active_weights():
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
      model, optax.chain(optax_gsm.gsm(compression=8), optax.sgd(0.1)),
      wrt=nnx.Param)
  before = kernels(model)
  bias = np.asarray(model.l1.bias[...])
  train_step(model, optimizer)
  moved = sum(int(np.sum(a != b)) for a, b in zip(before, kernels(model)))
  assert 0 < moved <= POOL // 8
  assert np.any(np.asarray(model.l1.bias[...]) != bias)  # outside the pool
  assert optax_gsm.gsm_metrics(optimizer.opt_state)["gsm/active"] == POOL // 8


def test_prune_apply_masks_keep_masked_on_state():
  model = MLP(nnx.Rngs(0))
  state = params_of(model)
  pruned, masks = optax_gsm.prune(state, compression=4)
  assert isinstance(pruned, nnx.State) and isinstance(masks, nnx.State)
  assert optax_gsm.sparsity_report(pruned).kept == POOL // 4
  for a, b in zip(jax.tree.leaves(optax_gsm.apply_masks(state, masks)),
                  jax.tree.leaves(pruned)):
    np.testing.assert_array_equal(a, b)
  # keep_masked with plain optax on the State itself (Variables and all).
  opt = optax.chain(optax.sgd(0.1), optax_gsm.keep_masked(masks))
  grads = jax.tree.map(jnp.ones_like, pruned)
  updates, _ = opt.update(grads, opt.init(pruned), pruned)
  after = optax.apply_updates(pruned, updates)
  assert optax_gsm.sparsity_report(after).kept == POOL // 4
  nnx.update(model, pruned)
  assert sum(int(np.count_nonzero(k)) for k in kernels(model)) == POOL // 4


@pytest.mark.parametrize("tree", ["params", "masks", "pure"])
def test_sparsity_report_names_have_no_value_suffix(tree):
  pruned, masks = optax_gsm.prune(params_of(MLP(nnx.Rngs(0))), compression=4)
  given = {"params": pruned, "masks": masks,
           "pure": nnx.to_pure_dict(pruned)}[tree]
  report = optax_gsm.sparsity_report(given)
  assert [leaf.path for leaf in report.leaves] == ["l1/kernel", "l2/kernel"]
  assert "value" not in str(report)


@pytest.mark.parametrize("pure_masks", [False, True])
def test_keep_masked_fine_tunes_with_nnx_optimizer(pure_masks):
  model = MLP(nnx.Rngs(0))
  pruned, masks = optax_gsm.prune(params_of(model), compression=4)
  nnx.update(model, pruned)
  if pure_masks:  # masks as a plain dict of arrays, e.g. after a checkpoint
    masks = nnx.to_pure_dict(masks)
  optimizer = nnx.Optimizer(
      model, optax.chain(optax.sgd(0.05, momentum=0.9),
                         optax_gsm.keep_masked(masks)), wrt=nnx.Param)
  start = kernels(model)
  losses = [float(train_step(model, optimizer)) for _ in range(4)]
  keep = [np.asarray(masks["l1"]["kernel"]), np.asarray(masks["l2"]["kernel"])]
  for k, m, s in zip(kernels(model), keep, start):
    assert np.all(k[~m] == 0.0)  # pruned entries stay exactly zero
    assert np.any(k[m] != s[m])  # kept entries train
  assert losses[-1] < losses[0]


def test_structured_prune_on_state_zeroes_removed_biases():
  model = MLP(nnx.Rngs(0))
  model.l1.bias[...] = jnp.ones(16)
  state = params_of(model)
  pool = jax.tree.map(lambda x: False, state)
  pool["l1"]["kernel"] = jax.tree.map(lambda x: True, pool["l1"]["kernel"])
  pruned, masks = optax_gsm.structured_prune(state, density=0.5,
                                             prunable=pool)
  bias = np.asarray(pruned["l1"]["bias"][...])
  live = np.asarray(masks["l1"]["kernel"][...])[0]
  assert live.sum() == 8 and np.all(bias[~live] == 0) and np.all(bias[live] == 1)
  # The same as on the plain dict.
  as_dict, _ = optax_gsm.structured_prune(
      nnx.to_pure_dict(state), density=0.5,
      prunable={"l1": {"kernel": True, "bias": False}, "l2": False})
  np.testing.assert_array_equal(as_dict["l1"]["bias"], bias)


def test_orbax_checkpoint_of_model_and_optimizer_is_bit_exact(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")

  def make():
    model = MLP(nnx.Rngs(0))
    return model, nnx.Optimizer(
        model, optax_gsm.gsm_sgd(0.05, compression=4, score_decay=0.9),
        wrt=nnx.Param)

  model, optimizer = make()
  for _ in range(3):
    train_step(model, optimizer)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "ckpt", nnx.state((model, optimizer)))
    checkpointer.wait_until_finished()
    model2, optimizer2 = nnx.eval_shape(make)
    restored = checkpointer.restore(tmp_path / "ckpt",
                                    nnx.state((model2, optimizer2)))
  nnx.update((model2, optimizer2), restored)

  def same():
    a = jax.tree.leaves(nnx.state((model, optimizer)))
    b = jax.tree.leaves(nnx.state((model2, optimizer2)))
    return len(a) == len(b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))

  assert same()
  train_step(model, optimizer)
  train_step(model2, optimizer2)
  assert same()  # training goes on identically


def test_example_quick_run(tmp_path, capsys):
  argv = sys.argv
  sys.argv = [EXAMPLE, "--quick", "--out", str(tmp_path), "--quiet",
              "--data-dir", str(tmp_path / "absent")]  # digits: no gunzip
  try:
    runpy.run_path(EXAMPLE, run_name="__main__")
  finally:
    sys.argv = argv
  out = capsys.readouterr().out
  assert "digits" in out and "gsm/prune_share=" in out
  assert "hard-pruned" in out and "l1/kernel" in out and "compression" in out
  assert (tmp_path / "nnx_fashion_mnist.png").stat().st_size > 0
