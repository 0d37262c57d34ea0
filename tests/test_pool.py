"""The default pool and prunable_by_path on Linen, NNX and Equinox trees."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_gsm
from examples.common import models
from optax_gsm import _paths
from optax_gsm import _pool


def pooled_names(params, prunable=None):
  flags = _pool.pool_flags(prunable, params)
  return sorted(n for n, f in zip(_paths.names(params), flags) if f)


# ----------------------------------------------------------------- Linen --

class LinenNet(nn.Module):

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(50, 16)(tokens)
    x = x + self.param("pos", nn.initializers.normal(0.02), (6, 16))
    x = x + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x))
    x = nn.Conv(16, (3,))(x)
    x = nn.BatchNorm(use_running_average=False)(x)
    return nn.Dense(3)(x.mean(1))


def linen_params():
  variables = LinenNet().init(jax.random.key(0), jnp.zeros((2, 6), jnp.int32))
  return variables


def test_linen_default_pool_is_the_kernels():
  variables = linen_params()
  # Linen's attention biases are heads x head_dim, like NNX's.
  assert variables["params"]["MultiHeadDotProductAttention_0"]["query"][
      "bias"].shape == (2, 8)
  assert pooled_names(variables) == [
      "params/Conv_0/kernel", "params/Dense_0/kernel",
      "params/MultiHeadDotProductAttention_0/key/kernel",
      "params/MultiHeadDotProductAttention_0/out/kernel",
      "params/MultiHeadDotProductAttention_0/query/kernel",
      "params/MultiHeadDotProductAttention_0/value/kernel"]


def test_linen_prune_leaves_biases_norms_and_tables_whole():
  params = linen_params()["params"]
  pruned, masks = optax_gsm.prune(params, compression=10)
  attn = pruned["MultiHeadDotProductAttention_0"]
  for leaf in ("query", "key", "value"):
    assert masks["MultiHeadDotProductAttention_0"][leaf]["bias"] is None
  np.testing.assert_array_equal(pruned["pos"], params["pos"])
  np.testing.assert_array_equal(pruned["Embed_0"]["embedding"],
                                params["Embed_0"]["embedding"])
  assert attn["query"]["kernel"].size > 0
  report = optax_gsm.sparsity_report(masks)
  assert sorted(r.path for r in report.leaves) == [
      n.removeprefix("params/") for n in pooled_names(linen_params())]


def test_linen_include_embeddings_and_positions():
  params = linen_params()["params"]
  pool = optax_gsm.prunable_by_path(include=(r"embedding$", r"^pos$"))
  assert pooled_names(params, pool) == sorted(
      pooled_names(params) + ["Embed_0/embedding", "pos"])
  _, masks = optax_gsm.prune(params, compression=4, prunable=pool)
  assert masks["pos"] is not None and masks["Embed_0"]["embedding"] is not None


# ------------------------------------------------------------------- NNX --

class NNXNet(nnx.Module):

  def __init__(self, rngs):
    self.embed = nnx.Embed(50, 16, rngs=rngs)
    self.pos = nnx.Param(jnp.ones((6, 16)))
    self.ln = nnx.LayerNorm(16, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=16,
                                       decode=False, rngs=rngs)
    self.conv = nnx.Conv(16, 16, (3,), rngs=rngs)
    self.bn = nnx.BatchNorm(16, rngs=rngs)
    self.head = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens) + self.pos[...]
    x = x + self.attn(self.ln(x))
    return self.head(self.bn(self.conv(x)).mean(1))


NNX_KERNELS = ["attn/key/kernel", "attn/out/kernel", "attn/query/kernel",
               "attn/value/kernel", "conv/kernel", "head/kernel"]
TOKENS = jnp.arange(24).reshape(4, 6) % 50
LABELS = jnp.arange(4) % 3


def nnx_loss(model):
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      model(TOKENS), LABELS).mean()


@pytest.mark.parametrize("pure", [False, True])
def test_nnx_default_pool_is_the_kernels(pure):
  state = nnx.state(NNXNet(nnx.Rngs(0)), nnx.Param)
  assert state["attn"]["query"]["bias"].shape == (2, 8)
  tree = nnx.to_pure_dict(state) if pure else state
  assert pooled_names(tree) == NNX_KERNELS


def _train_nnx(prunable, steps=3):
  model = NNXNet(nnx.Rngs(0))
  before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tx = optax_gsm.gsm_sgd(0.1, compression=10, prunable=prunable,
                         weight_decay=0.5, prune_step=steps - 1)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    opt.update(model, nnx.grad(nnx_loss)(model))

  for _ in range(steps):
    step(model, opt)
  return before, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_nnx_optimizer_default_pool_keeps_attention_biases_and_pos():
  _, after = _train_nnx(None)
  # Biases (zero at init, trained since) and the positional table are
  # outside the pool: the hard prune at 10x leaves them dense.
  for leaf in ("query", "key", "value"):
    bias = np.asarray(after["attn"][leaf]["bias"])
    assert np.count_nonzero(bias) == bias.size
  assert np.all(np.asarray(after["pos"]) != 0)
  # The hard prune hit the pool: 10x over the kernels.
  kernels = [after["attn"][k]["kernel"] for k in ("query", "key", "value",
                                                   "out")]
  kernels += [after["conv"]["kernel"], after["head"]["kernel"]]
  kept = sum(int(np.count_nonzero(k)) for k in kernels)
  assert kept == sum(k.size for k in kernels) // 10


def test_nnx_optimizer_prunable_by_path_matches_variables_and_arrays():
  # init sees nnx.Variables, update pure arrays: both named without .value.
  pool = optax_gsm.prunable_by_path(include=r"^pos$", exclude=r"^head/")
  _, after = _train_nnx(pool)
  assert np.all(np.asarray(after["head"]["kernel"]) != 0)  # left out
  pooled = [after["pos"], after["conv"]["kernel"]] + [
      after["attn"][k]["kernel"] for k in ("query", "key", "value", "out")]
  kept = sum(int(np.count_nonzero(k)) for k in pooled)
  assert kept == sum(k.size for k in pooled) // 10


def test_nnx_optimizer_takes_a_pure_dict_of_bools():
  model = NNXNet(nnx.Rngs(0))
  flags = jax.tree_util.tree_map_with_path(
      lambda p, _: _paths.name(p) in ("conv/kernel", "head/kernel"),
      nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  _, after = _train_nnx(flags)
  pooled = [after["conv"]["kernel"], after["head"]["kernel"]]
  assert sum(int(np.count_nonzero(k)) for k in pooled) == sum(
      k.size for k in pooled) // 10
  assert np.all(np.asarray(after["attn"]["query"]["kernel"]) != 0)


def test_nnx_prefix_of_bools_by_path():
  state = nnx.state(NNXNet(nnx.Rngs(0)), nnx.Param)
  flags = {k: k == "attn" for k in nnx.to_pure_dict(state)}
  flags["attn"] = {k: k != "out" for k in nnx.to_pure_dict(state)["attn"]}
  assert pooled_names(state, flags) == [
      "attn/key/bias", "attn/key/kernel", "attn/query/bias",
      "attn/query/kernel", "attn/value/bias", "attn/value/kernel"]


# -------------------------------------------------------------- Equinox --

class EqxNet(eqx.Module):
  conv: eqx.nn.Conv2d
  norm: eqx.nn.LayerNorm
  attn: eqx.nn.MultiheadAttention
  head: eqx.nn.Linear

  def __init__(self, key):
    k1, k2, k3 = jax.random.split(key, 3)
    self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)
    self.norm = eqx.nn.LayerNorm(4)
    self.attn = eqx.nn.MultiheadAttention(2, 4, use_query_bias=True,
                                          use_key_bias=True, key=k2)
    self.head = eqx.nn.Linear(4, 3, key=k3)

  def __call__(self, x):
    x = self.conv(x)  # (4, 6, 6)
    tokens = jax.vmap(self.norm)(x.reshape(4, -1).T)
    y = self.attn(tokens, tokens, tokens)
    return self.head(y.mean(0))


def eqx_params():
  return eqx.filter(EqxNet(jax.random.key(0)), eqx.is_inexact_array)


EQX_KERNELS = ["attn/key_proj/weight", "attn/output_proj/weight",
               "attn/query_proj/weight", "attn/value_proj/weight",
               "conv/weight", "head/weight"]


def test_equinox_default_pool_leaves_conv_bias_out():
  params = eqx_params()
  assert params.conv.bias.shape == (4, 1, 1)
  assert pooled_names(params) == EQX_KERNELS


def test_equinox_bool_module_is_a_pool_not_a_callable():
  params = eqx_params()
  flags = jax.tree_util.tree_map_with_path(
      lambda p, _: _paths.name(p) == "conv/weight", params)
  assert callable(flags)  # an eqx.Module: callable, but a pytree of bools
  assert pooled_names(params, flags) == ["conv/weight"]
  pruned, masks = optax_gsm.prune(params, compression=4, prunable=flags)
  assert masks.head.weight is None
  assert int(jnp.sum(masks.conv.weight)) == params.conv.weight.size // 4


def test_equinox_gsm_metrics_does_not_run_the_model():
  # Regression: gsm_metrics built its pool as a tree of params' structure, an
  # eqx.Module, which was taken for a callable pool and called on params.
  params = eqx_params()
  opt = optax_gsm.gsm_sgd(0.1, compression=10)
  state = opt.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = opt.update(grads, state, params)
  metrics = optax_gsm.gsm_metrics(state, params, compression=10)
  pool = sum(x.size for n, x in zip(_paths.names(params),
                                     jax.tree.leaves(params))
             if n in EQX_KERNELS)
  assert metrics["gsm/pool"] == pool
  expected = optax_gsm.prune_share(params, 10, prunable=optax_gsm.
                                   default_prunable)
  assert metrics["gsm/prune_share"] == pytest.approx(float(expected))


def test_equinox_prunable_by_path_in_baselines_and_hard_prune():
  params = eqx_params()
  pool = optax_gsm.prunable_by_path(exclude=r"^head/")
  grads = jax.tree.map(jnp.ones_like, params)
  for tx in (optax_gsm.gmp(0.1, 0, 1, update_every=1, prunable=pool),
             optax_gsm.hard_prune_at(0, compression=10, prunable=pool),
             optax_gsm.gsm(10, prunable=pool)):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    # The excluded head is not touched: its update passes through.
    np.testing.assert_array_equal(updates.head.weight, grads.head.weight)
  loss = lambda p, x: sum(jnp.sum(l ** 2) for l in jax.tree.leaves(p)) * x
  masks = optax_gsm.snip_masks(loss, params, 1.0, compression=10,
                               prunable=pool)
  assert masks.head.weight is None and masks.conv.weight is not None


# ------------------------------------------------------- bad input ------

def test_pattern_matching_nothing_names_it_and_lists_leaves():
  pool = optax_gsm.prunable_by_path(include=r"^embedding$")
  with pytest.raises(ValueError, match=r"include pattern '\^embedding\$' "
                     r"matches no leaf; the leaves are .*conv/weight"):
    optax_gsm.prune(eqx_params(), compression=10, prunable=pool)


def test_exclude_pattern_matching_nothing_raises():
  pool = optax_gsm.prunable_by_path(exclude="nonexistent")
  with pytest.raises(ValueError, match="exclude pattern 'nonexistent'"):
    pool(linen_params())


def test_empty_pool_raises_and_lists_leaves():
  pool = optax_gsm.prunable_by_path(exclude=".")
  with pytest.raises(ValueError, match=r"pool is empty.*the leaves are "
                     r".*Conv_0/kernel"):
    pool(linen_params())
  flags = jax.tree.map(lambda _: False, linen_params())
  with pytest.raises(ValueError, match="selects no leaf.*the leaves are"):
    optax_gsm.prune(linen_params(), compression=2, prunable=flags)


def test_bad_patterns_and_default():
  with pytest.raises(ValueError, match="include pattern '\\(' is not"):
    optax_gsm.prunable_by_path(include="(")
  with pytest.raises(TypeError, match="exclude takes regular expressions"):
    optax_gsm.prunable_by_path(exclude=[3])
  with pytest.raises(ValueError, match="default=False needs include"):
    optax_gsm.prunable_by_path(default=False)
  with pytest.raises(TypeError, match="default must be a bool"):
    optax_gsm.prunable_by_path(default="yes")


def test_bool_tree_of_wrong_paths_names_both():
  with pytest.raises(ValueError, match="matched by structure or by leaf "
                     "path.*other"):
    _pool.pool_flags({"other": True}, {"w": jnp.ones((2, 2))})


def test_default_pool_unchanged_for_plain_weight_dicts():
  # Leaves with no telling name keep the old rule: floating and 2-D or more.
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "w3": jnp.ones((2, 2, 2)),
            "idx": jnp.ones((2, 2), jnp.int32)}
  assert pooled_names(params) == ["w", "w3"]


# ------------------------------------------- the deep benchmark's nets --

@pytest.mark.parametrize("make", [
    lambda: models.ResNet(8, (2, 4, 4), rngs=nnx.Rngs(0)),
    lambda: models.ViT(patch=7, width=8, depth=1, heads=2, rngs=nnx.Rngs(0))])
def test_default_pool_is_every_kernel_of_resnet_and_vit(make):
  state = nnx.state(make(), nnx.Param)
  names = _paths.names(state)
  kernels = sorted(n for n in names if n.endswith("/kernel"))
  assert pooled_names(state) == kernels
  assert len(kernels) < len(names)  # biases, norms, pos are there, left out
