"""Our extensions for a lossless end: averaged scores and an in-schedule prune."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm
import numpy_reference as ref

SHAPES = [(6, 5), (4,), (3, 7)]
POOL = [True, False, True]


def _trees(seed, steps):
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
  grads = [[rng.normal(size=s).astype(np.float32) for s in SHAPES]
           for _ in range(steps)]
  return params, grads


def _run(opt, params, grads_seq):
  keys = ["a", "b", "c"]
  p = dict(zip(keys, map(jnp.asarray, params)))
  state = opt.init(p)
  step = jax.jit(opt.update)
  for grads in grads_seq:
    updates, state = step(dict(zip(keys, map(jnp.asarray, grads))), state, p)
    p = optax.apply_updates(p, updates)
  return [np.asarray(p[k]) for k in keys], state


@pytest.mark.parametrize("score_decay,prune_step,nesterov", [
    (0.9, None, False), (0.5, 3, True), (0.0, 2, False), (0.99, 0, True)])
def test_matches_numpy_reference(score_decay, prune_step, nesterov):
  params, grads = _trees(0, 8)
  pool_size = sum(math.prod(s) for s, f in zip(SHAPES, POOL) if f)
  kept = math.floor(pool_size / 4)
  opt = optax_gsm.gsm_sgd(0.05, compression=4, momentum=0.9,
                          weight_decay=0.01, nesterov=nesterov,
                          score_decay=score_decay, prune_step=prune_step)
  got, state = _run(opt, params, grads)
  want, keep, actives = ref.lossless_gsm_steps(
      params, grads, lr=0.05, momentum=0.9, weight_decay=0.01, kept=kept,
      pool=POOL, score_decay=score_decay, prune_step=prune_step,
      nesterov=nesterov)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  gsm_state = state[0]
  assert [int(gsm_state.active[k]) for k in ("a", "c")] == [
      int(m.sum()) for m in actives[-1]]
  if prune_step is not None:
    masks = state[-1].masks
    for k, m in zip(("a", "c"), keep):
      np.testing.assert_array_equal(np.asarray(masks[k]), m)
    nonzero = sum(int(np.count_nonzero(g)) for g, f in zip(got, POOL) if f)
    assert nonzero == kept


def test_exactly_q_nonzero_from_the_prune_step_on():
  params, grads = _trees(1, 6)
  opt = optax_gsm.gsm_sgd(0.1, compression=3, momentum=0.9, weight_decay=0.0,
                          score_decay=0.9, prune_step=2)
  p = {"a": jnp.asarray(params[0]), "b": jnp.asarray(params[1]),
       "c": jnp.asarray(params[2])}
  q = math.floor((30 + 21) / 3)
  state = opt.init(p)
  for i, g in enumerate(grads):
    updates, state = opt.update(
        {"a": jnp.asarray(g[0]), "b": jnp.asarray(g[1]),
         "c": jnp.asarray(g[2])}, state, p)
    p = optax.apply_updates(p, updates)
    nonzero = int(jnp.count_nonzero(p["a"]) + jnp.count_nonzero(p["c"]))
    if i < 2:
      assert nonzero == 51
    else:
      assert nonzero == q
      # The pruned model is what optax_gsm.prune keeps: the end needs no prune.
      pruned, _ = optax_gsm.prune(p, compression=3)
      np.testing.assert_array_equal(pruned["a"], p["a"])
  assert int(jnp.count_nonzero(p["b"])) == 4  # outside the pool: untouched


def test_score_decay_zero_is_the_papers_gsm_bit_for_bit():
  params, grads = _trees(2, 5)
  paper, _ = _run(optax_gsm.gsm_sgd(0.05, compression=4), params, grads)
  same, state = _run(optax_gsm.gsm_sgd(0.05, compression=4, score_decay=0.0),
                     params, grads)
  for a, b in zip(paper, same):
    np.testing.assert_array_equal(a, b)
  assert state[0].scores == ()


def test_averaged_scores_reset_on_zero_weights():
  params = {"w": jnp.array([[1.0, 0.0], [2.0, 3.0]])}
  tx = optax_gsm.gsm(compression=2, score_decay=0.5)
  state = tx.init(params)
  _, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
  np.testing.assert_allclose(state.scores["w"], [[0.5, 0.0], [1.0, 1.5]])
  params = {"w": jnp.array([[0.0, 0.0], [2.0, 3.0]])}
  _, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
  np.testing.assert_allclose(state.scores["w"], [[0.0, 0.0], [1.5, 2.25]])


def test_averaging_keeps_an_entry_active_through_one_noisy_step():
  params = {"w": jnp.ones((1, 3))}
  tx = optax_gsm.gsm(density=1 / 3, score_decay=0.9)
  state = tx.init(params)
  g1 = {"w": jnp.array([[5.0, 1.0, 1.0]])}
  g2 = {"w": jnp.array([[1.0, 2.0, 1.0]])}  # one step favours entry 1
  out, state = tx.update(g1, state, params)
  out, state = tx.update(g2, state, params)
  assert out["w"].tolist() == [[1.0, 0.0, 0.0]]  # entry 0 stays active
  paper = optax_gsm.gsm(density=1 / 3)
  out, _ = paper.update(g2, paper.init(params), params)
  assert out["w"].tolist() == [[0.0, 2.0, 0.0]]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(score_decay=1.0), ValueError, "score_decay"),
    (dict(score_decay=-0.1), ValueError, "score_decay"),
    (dict(score_decay=True), TypeError, "score_decay"),
    (dict(score_decay="0.9"), TypeError, "score_decay"),
])
def test_bad_score_decay(kwargs, error, match):
  with pytest.raises(error, match=match):
    optax_gsm.gsm(compression=2, **kwargs)


@pytest.mark.parametrize("step,error", [(-1, ValueError), (1.5, TypeError),
                                        (True, TypeError)])
def test_bad_prune_step(step, error):
  with pytest.raises(error, match="step"):
    optax_gsm.hard_prune_at(step, compression=2)
  with pytest.raises(error, match="step"):
    optax_gsm.gsm_sgd(0.1, compression=2, prune_step=step)


def test_state_from_another_score_decay_is_rejected():
  params = {"w": jnp.ones((2, 2))}
  state = optax_gsm.gsm(compression=2).init(params)
  with pytest.raises(ValueError, match="score_decay"):
    optax_gsm.gsm(compression=2, score_decay=0.9).update(params, state, params)


def test_hard_prune_at_needs_params_and_a_reachable_q():
  params = {"w": jnp.ones((2, 2))}
  tx = optax_gsm.hard_prune_at(0, compression=2)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params))
  with pytest.raises(ValueError, match="0 entries"):
    optax_gsm.hard_prune_at(0, compression=10).init(params)


def test_map_params_and_checkpoint_shapes():
  params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
  opt = optax_gsm.gsm_sgd(0.1, compression=2, score_decay=0.9, prune_step=1)
  state = opt.init(params)
  cast = optax.tree.map_params(opt, lambda x: x.astype(jnp.bfloat16), state)
  assert jax.tree.structure(cast) == jax.tree.structure(state)
  assert cast[-1].masks["w"].dtype == jnp.bool_
  abstract = opt.init(jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
  assert jax.tree.structure(abstract) == jax.tree.structure(state)


def test_injected_score_decay_and_prune_step_match_the_static_options():
  """optax.inject_hyperparams turns numeric options into arrays, traced under
  jit; the result must be the static options' bit for bit."""
  params, grads = _trees(3, 6)
  static, _ = _run(optax_gsm.gsm_sgd(0.05, compression=4, score_decay=0.9,
                                     prune_step=3), params, grads)
  injected = optax.inject_hyperparams(optax_gsm.gsm_sgd)(
      learning_rate=0.05, compression=4.0, score_decay=0.9, prune_step=3)
  got, state = _run(injected, params, grads)
  for g, w in zip(got, static):
    np.testing.assert_array_equal(g, w)
  assert state.hyperparams["prune_step"].dtype == jnp.int32


def test_injected_gsm_sgd_without_options_keeps_the_papers_state():
  params, grads = _trees(4, 3)
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(learning_rate=0.05,
                                                     density=0.25)
  got, state = _run(opt, params, grads)
  want, _ = _run(optax_gsm.gsm_sgd(0.05, density=0.25), params, grads)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  assert state.inner_state[0].scores == ()
  assert "score_decay" not in state.hyperparams


@pytest.mark.parametrize("bad,error", [
    (jnp.float32(1.0), ValueError), (jnp.ones(2) * 0.5, TypeError),
    (jnp.bool_(True), TypeError)])
def test_bad_array_score_decay(bad, error):
  with pytest.raises(error, match="score_decay"):
    optax_gsm.gsm(compression=2, score_decay=bad)


@pytest.mark.parametrize("bad,error", [
    (jnp.float32(1.0), TypeError), (jnp.int32(-1), ValueError),
    (jnp.arange(2), TypeError)])
def test_bad_array_prune_step(bad, error):
  with pytest.raises(error, match="step"):
    optax_gsm.hard_prune_at(bad, compression=2)


def test_injected_integer_score_decay_zero_is_the_papers_mask():
  params, grads = _trees(5, 3)
  opt = optax.inject_hyperparams(optax_gsm.gsm)(compression=4.0,
                                                score_decay=0)
  keys = ["a", "b", "c"]
  p = dict(zip(keys, map(jnp.asarray, params)))
  g = dict(zip(keys, map(jnp.asarray, grads[0])))
  got, _ = opt.update(g, opt.init(p), p)
  want, _ = optax_gsm.gsm(compression=4.0).update(
      g, optax_gsm.gsm(compression=4.0).init(p), p)
  for k in keys:
    np.testing.assert_array_equal(got[k], want[k])
