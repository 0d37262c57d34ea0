"""Regression tests for defects found by reviews: each fails before its fix.

Grouped by defect; parametrized so that a failure names its case.
"""

import logging
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import numpy_reference as ref
import optax_gsm
from optax_gsm import _pool

# -- A concrete ratio keeps exactly floor(N / C) or floor(N d) ------------

_N = 3_000_002


@pytest.mark.parametrize("ratio", [
    3, 3.0, np.float32(3.0), jnp.float32(3.0), np.int64(3), jnp.int32(3),
    np.array(3, np.int64), np.float64(3.0)], ids=repr)
def test_integral_compression_is_exact_near_a_million(ratio):
  # The old tolerance, 4 float32 ulps times Q, was 0.48 here and turned
  # 1,000,000.67 into 1,000,001.
  assert _pool.num_kept(_N, ratio, None) == 1_000_000


@pytest.mark.parametrize("pool,ratio,kind,want", [
    (5_000_003, np.float32(0.3), "density", 1_500_000),
    (5_000_003, jnp.float32(0.3), "density", 1_500_000),
    (_N, np.float32(1 / 3), "density", 1_000_000),
    (_N, jnp.float32(1.5), "compression", 2_000_001),
    (100, np.float32(0.29), "density", 29),
    (100, 0.29, "density", 29),
    (3, 1 / 3, "density", 1),
    (7, 1 / 7, "density", 1),
    (8, 0.37, "density", 2),
], ids=str)
def test_concrete_ratio_keeps_its_intended_decimal(pool, ratio, kind, want):
  args = (None, ratio) if kind == "density" else (ratio, None)
  assert _pool.num_kept(pool, *args) == want


@pytest.mark.parametrize("ratio", [np.float32(3.0), jnp.int32(3)], ids=repr)
def test_integral_compression_reaches_prune_and_traced_gsm(ratio):
  params = {"w": jnp.linspace(1.0, 2.0, _N).reshape(_N, 1)}
  _, masks = optax_gsm.prune(params, compression=ratio)
  assert int(masks["w"].sum()) == 1_000_000
  traced = jax.jit(lambda c: _pool.num_kept(_N, c, None))(jnp.asarray(ratio))
  assert int(traced) == 1_000_000


def test_random_concrete_ratios_match_the_reference():
  rng = np.random.default_rng(0)
  for pool in (997, 10_007, 3_000_002, 1_000_000_003):
    for d in rng.uniform(0.05, 1, 40):
      assert _pool.num_kept(pool, None, float(d)) == ref.num_kept(
          pool, density=float(d)), (pool, d)
    for c in (1.5, 3, 7.3, 60, 125):
      assert _pool.num_kept(pool, c, None) == ref.num_kept(
          pool, compression=c), (pool, c)


# -- score_decay is never rounded to the params' dtype --------------------

def test_injected_score_decay_rejects_bf16_cast():
  params = {"w": jnp.ones((8, 8), jnp.bfloat16)}
  opt = optax.inject_hyperparams(optax_gsm.gsm)(
      compression=jnp.float32(4), score_decay=0.999)
  with pytest.raises(TypeError, match="hyperparam_dtype=jnp.float32"):
    opt.init(params)


@pytest.mark.parametrize("how", ["float32 value", "hyperparam_dtype"])
def test_injected_score_decay_is_float32_for_bf16_params(how):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.bfloat16)}
  grads = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.bfloat16)}
  if how == "float32 value":
    opt = optax.inject_hyperparams(optax_gsm.gsm)(
        compression=jnp.float32(4), score_decay=jnp.float32(0.999))
  else:
    opt = optax.inject_hyperparams(optax_gsm.gsm,
                                   hyperparam_dtype=jnp.float32)(
                                       compression=4, score_decay=0.999)
  state = opt.init(params)
  assert state.hyperparams["score_decay"].dtype == jnp.float32
  _, state = jax.jit(opt.update)(grads, state, params)
  rho = np.float32(0.999)
  taylor = np.abs(np.asarray(grads["w"], np.float32)
                  * np.asarray(params["w"], np.float32))
  np.testing.assert_array_equal(state.inner_state.scores["w"],
                                (np.float32(1) - rho) * taylor)


# -- a mask or pool function under inject_hyperparams ---------------------

def _decay_updates(opt, params):
  zeros = jax.tree.map(jnp.zeros_like, params)
  return opt.update(zeros, opt.init(params), params)[0]


def test_injected_gsm_sgd_mask_function_raises_naming_static_args():
  params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(
      learning_rate=0.1, compression=2, weight_decay=0.5, momentum=0.0,
      weight_decay_mask=optax_gsm.default_prunable)
  with pytest.raises(TypeError, match="static_args"):
    _decay_updates(opt, params)


# A callable mask under plain inject_hyperparams needs static_args: tested
# above, so that pair is not among these cases.
@pytest.mark.parametrize("inject, mask", [
    (inject, mask) for inject in ("plain", "inject", "inject static")
    for mask in ("prunable", "default_prunable")
    if (inject, mask) != ("inject", "default_prunable")])
def test_gsm_sgd_decays_the_pool_only(inject, mask):
  params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
  mask = optax_gsm.default_prunable if mask == "default_prunable" else mask
  factory = {"plain": optax_gsm.gsm_sgd,
             "inject": optax.inject_hyperparams(optax_gsm.gsm_sgd),
             "inject static": optax.inject_hyperparams(
                 optax_gsm.gsm_sgd, static_args=("weight_decay_mask",))}[
                     inject]
  opt = factory(learning_rate=0.1, compression=2, weight_decay=0.5,
                momentum=0.0, weight_decay_mask=mask)
  updates = _decay_updates(opt, params)
  np.testing.assert_allclose(updates["w"], -0.05)
  np.testing.assert_array_equal(updates["b"], 0.0)


@pytest.mark.parametrize("factory", ["gsm", "hard_prune_at", "structured"])
def test_injected_prunable_function_names_static_args(factory):
  params = {"w": jnp.ones((4, 4))}
  make = {"gsm": lambda: optax.inject_hyperparams(optax_gsm.gsm)(
              compression=2, prunable=optax_gsm.default_prunable),
          "hard_prune_at": lambda: optax.inject_hyperparams(
              optax_gsm.hard_prune_at)(
                  step=1, compression=2, prunable=optax_gsm.default_prunable),
          "structured": lambda: optax.inject_hyperparams(
              optax_gsm.structured_gsm)(
                  compression=2, prunable=optax_gsm.default_prunable)}[factory]
  with pytest.raises(ValueError, match="static_args"):
    make().init(params)


def test_criterion_that_is_not_callable_names_static_args():
  with pytest.raises(ValueError, match="static_args"):
    optax_gsm.gsm(compression=2, criterion=jnp.float32(0.0))


# -- a state built for other params is refused ----------------------------

_SMALL = {"w": jnp.arange(16.0).reshape(4, 4)}
_BIG = {"w": jnp.arange(32.0).reshape(8, 4)}
_OTHER = {"v": jnp.arange(16.0).reshape(4, 4), "w": jnp.ones((4, 4))}
_STATEFUL = {
    "gsm": lambda: optax_gsm.gsm(compression=2, score_decay=0.9),
    "gsm paper": lambda: optax_gsm.gsm(compression=2),
    "hard_prune_at": lambda: optax_gsm.hard_prune_at(1, 2),
    "gmp": lambda: optax_gsm.gmp(0.5, 0, 2, 1),
    "weightmom": lambda: optax_gsm.weightmom(0.5, 0, 2, 1),
    "structured_gsm": lambda: optax_gsm.structured_gsm(2),
    "gsm_sgd": lambda: optax_gsm.gsm_sgd(0.1, 2, prune_step=3),
}


# gsm_sgd with bigger params: the paper's gsm holds counts only, and
# optax.trace's own state is optax's to check, so that pair is left out.
@pytest.mark.parametrize("name, other", [
    (name, other) for name in _STATEFUL for other in ("bigger", "other tree")
    if (name, other) != ("gsm_sgd", "bigger")])
def test_state_of_other_params_is_refused(name, other):
  tx = _STATEFUL[name]()
  state = tx.init(_SMALL)
  params = _BIG if other == "bigger" else _OTHER
  if name in ("gsm paper", "structured_gsm") and other == "bigger":
    # Their state holds only per-leaf counts: nothing stale to broadcast.
    tx.update(params, state, params)
    return
  with pytest.raises(ValueError, match="does not belong to these params"):
    tx.update(params, state, params)
  # Eagerly and under jit alike.
  with pytest.raises(ValueError, match="does not belong to these params"):
    jax.jit(tx.update)(params, state, params)


def test_injected_state_check_works_under_jit():
  opt = optax.inject_hyperparams(optax_gsm.gsm)(density=0.5, score_decay=0.9)
  state = opt.init(_SMALL)
  _, state = jax.jit(opt.update)(_SMALL, state, _SMALL)
  assert int(state.inner_state.active["w"]) == 8


# -- load_sparse refuses files save_sparse did not write ------------------

@pytest.mark.parametrize("arrays", [
    {"a": np.ones(3)}, {"w::weird": np.ones(3)}, {}], ids=str)
def test_load_sparse_refuses_foreign_npz(tmp_path, arrays):
  path = tmp_path / "foreign.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match="foreign.npz"):
    optax_gsm.load_sparse(path)


# -- keep_masked where optax hands it MaskedNode leaves -------------------

@pytest.mark.parametrize("wrapper", ["multi_transform", "masked"])
def test_keep_masked_inside_optax_partitions(wrapper):
  params = {"a": jnp.array([[1.0, -4.0], [0.5, 3.0]]), "b": jnp.ones((2, 2))}
  _, masks = optax_gsm.prune(params, compression=2)
  grads = jax.tree.map(jnp.ones_like, params)
  if wrapper == "multi_transform":
    opt = optax.multi_transform(
        {"x": optax.chain(optax.sgd(0.1), optax_gsm.keep_masked(masks)),
         "y": optax.sgd(0.1)}, {"a": "x", "b": "y"})
  else:
    opt = optax.chain(optax.sgd(0.1), optax.masked(
        optax_gsm.keep_masked(masks), {"a": True, "b": False}))
  updates, _ = opt.update(grads, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  kept = np.asarray(masks["a"])
  np.testing.assert_array_equal(np.asarray(new["a"])[~kept], 0.0)
  np.testing.assert_allclose(np.asarray(new["a"])[kept],
                             np.asarray(params["a"])[kept] - 0.1)
  np.testing.assert_allclose(new["b"], 0.9)  # not kept_masked's: untouched


def test_keep_masked_drops_none_masks_of_leaves_the_optimizer_lacks():
  nnx = pytest.importorskip("flax.nnx")

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(4, 8, rngs=rngs)
      self.bn = nnx.BatchNorm(8, rngs=rngs)
      self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
      return self.l2(self.bn(self.l1(x)))

  model = Model(nnx.Rngs(0))
  _, masks = optax_gsm.prune(nnx.state(model), compression=2)
  optimizer = nnx.Optimizer(model, optax.chain(
      optax.sgd(0.1), optax_gsm.keep_masked(masks)), wrt=nnx.Param)
  grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 4)))),
                   argnums=nnx.DiffState(0, nnx.Param))(model)
  optimizer.update(model, grads)
  pruned = ~np.asarray(masks["l1"]["kernel"].get_value())
  assert np.all(np.asarray(model.l1.kernel.get_value())[pruned] == 0)


def test_mismatched_masks_error_names_leaves_not_a_treedef():
  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  masks = {"a": jnp.ones(2, bool), "c": jnp.ones(2, bool)}
  with pytest.raises(ValueError) as info:
    optax_gsm.keep_masked(masks).init(params)
  message = str(info.value)
  assert "masks have c, which params lack" in message
  assert "params have b, which masks lack" in message
  assert "PyTreeDef" not in message


# -- complex params and PRNG key leaves -----------------------------------

_COMPLEX = {"w": jnp.array([[3 + 0j, 0.1j], [0.5j, 4j]], jnp.complex64)}


@pytest.mark.parametrize("name,tx", [
    ("gsm averaged", lambda: optax_gsm.gsm(compression=2, score_decay=0.9)),
    ("weightmom", lambda: optax_gsm.weightmom(0.5, 0, 1, 1, window=1,
                                              min_below=1)),
    ("gmp", lambda: optax_gsm.gmp(0.5, 0, 1, 1)),
    ("hard_prune_at", lambda: optax_gsm.hard_prune_at(0, 2)),
])
def test_complex_params_rank_by_modulus(name, tx):
  del name
  tx = tx()
  params = _COMPLEX
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
  if isinstance(state, optax_gsm.GSMState):
    assert state.scores["w"].dtype == jnp.float32
    # |g w| = |w|: the two largest moduli (3 and 4) keep their gradient.
    np.testing.assert_array_equal(updates["w"] != 0, [[True, False],
                                                      [False, True]])
  else:  # pruned: the entries of modulus 0.1 and 0.5 go to 0
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.abs(new["w"]) > 0, [[True, False],
                                                         [False, True]])


def test_synflow_accepts_a_prng_key_leaf():
  params = {"a": jnp.array([[1.0, 0.1], [0.2, 3.0]]),
            "b": jnp.array([[0.5], [0.01]])}
  def apply(p, x):
    return jax.nn.relu(x @ p["a"]) @ p["b"]
  _, want = optax_gsm.synflow(apply, params, (1, 2), density=0.5, rounds=4)
  with_key = {**params, "rng": jax.random.key(0)}
  _, masks = optax_gsm.synflow(apply, with_key, (1, 2), density=0.5,
                               rounds=4)
  assert masks["rng"] is None
  for name in want:
    np.testing.assert_array_equal(masks[name], want[name])


# -- a "never" step ------------------------------------------------------

@pytest.mark.parametrize("step", [2**31, sys.maxsize], ids=str)
def test_prune_step_beyond_int32_never_prunes(step):
  params = {"w": jnp.arange(1.0, 17.0).reshape(4, 4)}
  opt = optax_gsm.gsm_sgd(0.0, compression=2, weight_decay=0.0,
                          prune_step=step)
  state = opt.init(params)
  for _ in range(2):
    updates, state = jax.jit(opt.update)(params, state, params)
  assert np.all(np.asarray(optax.apply_updates(params, updates)["w"]) != 0)


@pytest.mark.parametrize("factory", [optax_gsm.gmp, optax_gsm.weightmom])
def test_schedule_end_beyond_int32_is_refused(factory):
  with pytest.raises(ValueError, match="end_step must be <= 2"):
    factory(0.5, 0, sys.maxsize)


# -- checkpoint hyperparams from NumPy and JAX ---------------------------

@pytest.mark.parametrize("value,stored", [
    (np.int64(10), 10), (jnp.int32(10), 10), (jnp.float32(0.1), 0.1),
    (np.float32(0.1), 0.1), (np.float64(0.25), 0.25), (np.bool_(True), True),
    (jnp.array(3.0), 3.0)], ids=repr)
def test_checkpoint_describes_numpy_and_jax_scalars(value, stored):
  from optax_gsm import checkpoint  # pylint: disable=g-import-not-at-top
  described = checkpoint.describe({"w": jnp.ones(2)}, (), ratio=value)
  assert described["hyperparams"]["ratio"] == stored
  assert type(described["hyperparams"]["ratio"]) is type(stored)
  checkpoint.check_compatible(
      described, checkpoint.describe({"w": jnp.ones(2)}, (), ratio=stored))


@pytest.mark.parametrize("value", [jnp.ones(2), float("nan"), object()],
                         ids=["array", "nan", "object"])
def test_checkpoint_refuses_what_is_not_a_json_scalar(value):
  from optax_gsm import checkpoint  # pylint: disable=g-import-not-at-top
  with pytest.raises(TypeError, match="ratio="):
    checkpoint.describe({"w": jnp.ones(2)}, (), ratio=value)


# -- eager calls reuse one compilation -----------------------------------

class _Compiles(logging.Handler):
  def __init__(self):
    super().__init__()
    self.count = 0

  def emit(self, record):
    if "Compiling" in record.getMessage():
      self.count += 1


_EAGER = {
    "prune": lambda p: optax_gsm.prune(p, compression=4),
    "gsm": optax_gsm.gsm(compression=4),
    "gsm averaged": optax_gsm.gsm(compression=4, score_decay=0.9),
    "gsm_sgd prune_step": optax_gsm.gsm_sgd(0.1, 4, prune_step=1),
    "hard_prune_at": optax_gsm.hard_prune_at(1, 4),
    "gmp": optax_gsm.gmp(0.25, 0, 4, 2),
    "weightmom": optax_gsm.weightmom(0.25, 0, 4, 2),
    "structured_gsm": optax_gsm.structured_gsm(2),
}


@pytest.mark.parametrize("name", list(_EAGER))
def test_identical_eager_calls_compile_once(name):
  params = {"w": jnp.arange(1.0, 33.0).reshape(4, 8),
            "v": jnp.arange(1.0, 17.0).reshape(8, 2)}
  what = _EAGER[name]
  if callable(what) and not hasattr(what, "update"):
    call = lambda: what(params)
  else:
    state = what.init(params)
    call = lambda: what.update(params, state, params)
  jax.block_until_ready(call())  # the first call compiles
  counter = _Compiles()
  logger = logging.getLogger("jax")
  logger.addHandler(counter)
  try:
    with jax.log_compiles(True):
      for _ in range(2):
        jax.block_until_ready(call())
  finally:
    logger.removeHandler(counter)
  assert counter.count == 0


# -- weight_decay_for warns when the decay would wreck training ----------

@pytest.mark.parametrize("kwargs,needed", [
    (dict(learning_rate=1e-3, steps=600, decoupled=True), 1200),
    (dict(learning_rate=1e-3, steps=300, decoupled=True), 1200),
    (dict(learning_rate=0.1, steps=300, momentum=0.9), 1200),
], ids=["adamw 600", "adamw 300", "sgd 300"])
def test_weight_decay_for_warns_when_it_shrinks_kept_weights(kwargs, needed):
  with pytest.warns(UserWarning, match=rf"at least {needed} steps") as caught:
    optax_gsm.weight_decay_for(**kwargs)
  message = " ".join(str(w.message) for w in caught)
  assert "hard_prune_at" in message and "per step" in message


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=1e-2, steps=6000, momentum=0.99),
    dict(learning_rate=1e-3, steps=8560, decoupled=True),
], ids=["paper sgd", "adamw doc"])
def test_weight_decay_for_is_quiet_for_long_runs(kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    optax_gsm.weight_decay_for(**kwargs)
