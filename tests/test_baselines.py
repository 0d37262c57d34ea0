"""Tests of the comparison methods: GMP, its schedule, SNIP, lottery tickets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm


def _params(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {
      "a": {"kernel": jax.random.normal(keys[0], (6, 5)),
            "bias": jax.random.normal(keys[1], (5,))},
      "b": {"kernel": jax.random.normal(keys[2], (5, 3)),
            "bias": jnp.ones(3)},
  }


def _np_top_k_mask(scores, k):
  """Reference: k largest over the concatenation, ties to the lower index."""
  flat = np.concatenate([np.ravel(s) for s in scores])
  order = np.lexsort((np.arange(flat.size), -flat))
  keep = np.zeros(flat.size, bool)
  keep[order[:k]] = True
  out, start = [], 0
  for s in scores:
    out.append(keep[start:start + s.size].reshape(s.shape))
    start += s.size
  return out


# ---------------------------------------------------------------- schedule


def test_polynomial_density_schedule_formula():
  sched = optax_gsm.polynomial_density_schedule(
      0.05, begin_step=10, end_step=110, initial_density=0.8)
  for t in (0, 10, 35, 60, 109, 110, 500):
    frac = min(max((t - 10) / 100, 0.0), 1.0)
    want = 0.05 + (0.8 - 0.05) * (1 - frac) ** 3
    np.testing.assert_allclose(float(sched(t)), want, rtol=1e-6)


def test_polynomial_density_schedule_quantized_and_reaches_final():
  sched = optax_gsm.polynomial_density_schedule(
      0.1, begin_step=0, end_step=95, update_every=10)
  assert float(sched(14)) == float(sched(10)) != float(sched(20))
  assert float(sched(95)) == pytest.approx(0.1)  # end_step is not a multiple
  values = [float(sched(t)) for t in range(0, 120)]
  assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(final_density=0.0), ValueError, "final_density"),
    (dict(final_density=1.5), ValueError, "final_density"),
    (dict(final_density="0.1"), TypeError, "final_density"),
    (dict(initial_density=0.05), ValueError, "initial_density"),
    (dict(end_step=10), ValueError, "end_step"),
    (dict(begin_step=-1), ValueError, "begin_step"),
    (dict(begin_step=1.5), TypeError, "begin_step"),
    (dict(update_every=0), ValueError, "update_every"),
    (dict(power=0.0), ValueError, "power"),
])
def test_polynomial_density_schedule_bad_arguments(kwargs, error, match):
  args = dict(final_density=0.1, begin_step=10, end_step=20)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    optax_gsm.polynomial_density_schedule(**args)


# --------------------------------------------------------------------- gmp


def _run_gmp(params, steps, grads_fn=None, jit=True, **gmp_kwargs):
  opt = optax.chain(optax.sgd(0.1), optax_gsm.gmp(**gmp_kwargs))
  state = opt.init(params)

  def step(params, state):
    grads = (jax.tree.map(jnp.zeros_like, params) if grads_fn is None
             else grads_fn(params))
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step
  history = []
  for _ in range(steps):
    params, state = step(params, state)
    history.append(optax_gsm.sparsity_report(state[1].masks).kept)
  return params, state, history


def test_gmp_global_follows_schedule_and_matches_prune():
  params = _params()
  pool = 6 * 5 + 5 * 3
  kw = dict(final_density=0.2, begin_step=2, end_step=12, update_every=3)
  sched = optax_gsm.polynomial_density_schedule(**kw)
  out, state, history = _run_gmp(params, 16, **kw)
  # Update t (0-based) recomputes the masks when due; kept = floor(N d_t).
  due = [t for t in range(16) if 2 <= t <= 12 and ((t - 2) % 3 == 0 or t == 12)]
  for t, kept in enumerate(history):
    last = max([d for d in due if d <= t], default=None)
    want = pool if last is None else math.floor(pool * float(sched(last)))
    assert kept == want, (t, kept, want)
  assert history[-1] == math.floor(pool * 0.2)
  # Zero gradients: the final masks are the global magnitude masks of params.
  _, masks = optax_gsm.prune(params, density=0.2)
  for got, want in zip(jax.tree.leaves(state[1].masks),
                       jax.tree.leaves(masks)):
    np.testing.assert_array_equal(got, want)
  for m, w in zip(jax.tree.leaves(state[1].masks), [out["a"]["kernel"],
                                                    out["b"]["kernel"]]):
    assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)
  np.testing.assert_array_equal(out["a"]["bias"], params["a"]["bias"])


def test_gmp_layer_scope_prunes_each_leaf_to_the_density():
  params = _params(1)
  _, state, _ = _run_gmp(params, 3, final_density=0.3, begin_step=0,
                         end_step=1, update_every=1, scope="layer")
  ma, mb = state[1].masks["a"]["kernel"], state[1].masks["b"]["kernel"]
  assert int(ma.sum()) == math.floor(30 * 0.3)
  assert int(mb.sum()) == math.floor(15 * 0.3)
  want = _np_top_k_mask([np.abs(params["b"]["kernel"])], 4)[0]
  np.testing.assert_array_equal(mb, want)


def test_gmp_holds_masks_while_training():
  params = _params(2)
  grads_fn = lambda p: jax.tree.map(jnp.ones_like, p)
  out, state, _ = _run_gmp(params, 8, grads_fn=grads_fn, final_density=0.25,
                           begin_step=0, end_step=2, update_every=1)
  masks = state[1].masks
  for m, w in zip([masks["a"]["kernel"], masks["b"]["kernel"]],
                  [out["a"]["kernel"], out["b"]["kernel"]]):
    assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)
    assert np.all(np.asarray(w)[np.asarray(m)] != 0.0)
  assert optax_gsm.sparsity_report(out).kept == math.floor(45 * 0.25)


def test_gmp_eager_equals_jit():
  params = _params(3)
  kw = dict(final_density=0.3, begin_step=1, end_step=4, update_every=2)
  a, _, _ = _run_gmp(params, 6, jit=True, **kw)
  b, _, _ = _run_gmp(params, 6, jit=False, **kw)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6)


def test_gmp_bad_arguments():
  with pytest.raises(ValueError, match=r"\('global', 'layer'\)"):
    optax_gsm.gmp(0.1, 0, 10, scope="per-layer")
  with pytest.raises(ValueError, match="selection"):
    optax_gsm.gmp(0.1, 0, 10, selection="fast")
  with pytest.raises(ValueError, match="final_density"):
    optax_gsm.gmp(2.0, 0, 10)
  tx = optax_gsm.gmp(0.5, 0, 10)
  params = _params()
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params))
  with pytest.raises(ValueError, match="prunable selects no leaf"):
    optax_gsm.gmp(0.5, 0, 10, prunable=lambda p: jax.tree.map(
        lambda _: False, p)).init(params)


# -------------------------------------------------------------------- snip


def _loss(params, batch):
  x, y = batch
  h = jnp.tanh(x @ params["a"]["kernel"] + params["a"]["bias"])
  logits = h @ params["b"]["kernel"] + params["b"]["bias"]
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      logits, y).mean()


def test_snip_masks_are_global_top_q_of_g_times_w():
  params = _params(4)
  x = jax.random.normal(jax.random.key(9), (16, 6))
  y = jnp.arange(16) % 3
  masks = optax_gsm.snip_masks(_loss, params, (x, y), compression=5)
  grads = jax.grad(_loss)(params, (x, y))
  scores = [np.abs(np.asarray(grads[k]["kernel"] * params[k]["kernel"]))
            for k in ("a", "b")]
  want = _np_top_k_mask(scores, math.floor(45 / 5))
  np.testing.assert_array_equal(masks["a"]["kernel"], want[0])
  np.testing.assert_array_equal(masks["b"]["kernel"], want[1])
  assert masks["a"]["bias"] is None


def test_snip_then_keep_masked_trains_the_sparse_net():
  params = _params(5)
  x = jax.random.normal(jax.random.key(1), (32, 6))
  y = jnp.arange(32) % 3
  masks = optax_gsm.snip_masks(_loss, params, (x, y), density=0.3)
  p = optax_gsm.apply_masks(params, masks)
  opt = optax.chain(optax.sgd(0.1, momentum=0.9), optax_gsm.keep_masked(masks))
  state = opt.init(p)
  first = float(_loss(p, (x, y)))
  for _ in range(30):
    updates, state = opt.update(jax.grad(_loss)(p, (x, y)), state, p)
    p = optax.apply_updates(p, updates)
  assert float(_loss(p, (x, y))) < first
  assert optax_gsm.sparsity_report(p).kept <= math.floor(45 * 0.3)


def test_snip_bad_arguments():
  params = _params()
  with pytest.raises(TypeError, match="loss_fn must be callable"):
    optax_gsm.snip_masks(None, params, None, 2)
  with pytest.raises(ValueError, match="exactly one of compression"):
    optax_gsm.snip_masks(_loss, params, None)
  with pytest.raises(ValueError, match="compression must be >= 1"):
    optax_gsm.snip_masks(_loss, params, None, 0.5)


# --------------------------------------------------------- lottery tickets


def test_lottery_ticket_rewinds_survivors_to_init():
  init, trained = _params(6), _params(7)
  ticket, masks = optax_gsm.lottery_ticket(init, trained, density=0.2)
  _, want_masks = optax_gsm.prune(trained, density=0.2)
  for k in ("a", "b"):
    m = np.asarray(masks[k]["kernel"])
    np.testing.assert_array_equal(m, want_masks[k]["kernel"])
    np.testing.assert_array_equal(
        ticket[k]["kernel"], np.where(m, init[k]["kernel"], 0.0))
    np.testing.assert_array_equal(ticket[k]["bias"], init[k]["bias"])
  assert optax_gsm.sparsity_report(masks).kept == math.floor(45 * 0.2)


def test_lottery_ticket_bad_arguments():
  init = _params()
  with pytest.raises(ValueError, match="different structures"):
    optax_gsm.lottery_ticket(init, {"a": init["a"]}, 2)
  other = jax.tree.map(lambda x: x, init)
  other["b"]["kernel"] = jnp.ones((5, 4))
  with pytest.raises(ValueError, match="differ in shape"):
    optax_gsm.lottery_ticket(init, other, 2)
  with pytest.raises(ValueError, match="exactly one of compression"):
    optax_gsm.lottery_ticket(init, init)


def test_gmp_rejects_top_k_selection_at_construction():
  with pytest.raises(ValueError, match="k is traced"):
    optax_gsm.gmp(0.1, 0, 10, 1, selection="top_k")


def test_schedule_accepts_numpy_scalars():
  sched = optax_gsm.polynomial_density_schedule(np.float32(0.5), np.int64(0),
                                                np.int64(10))
  assert float(sched(10)) == pytest.approx(0.5)


def test_polynomial_density_schedule_lives_in_schedules_and_is_re_exported():
  from optax_gsm import baselines, schedules  # pylint: disable=g-import-not-at-top
  assert (optax_gsm.polynomial_density_schedule
          is schedules.polynomial_density_schedule
          is baselines.polynomial_density_schedule)
  value = schedules.polynomial_density_schedule(0.1, 0, 10)(5)
  assert value.dtype == jnp.float32 and not value.weak_type  # never cast


def test_snip_leaves_an_integer_leaf_out_of_the_gradient():
  params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "step": jnp.int32(3)}
  batch = jnp.array([[3.0, 0.1], [1.0, 2.0]])
  loss = lambda p, x: jnp.sum(p["w"] * x) * p["step"]
  masks = optax_gsm.snip_masks(loss, params, batch, density=0.5)
  assert masks["step"] is None
  g_times_w = np.abs(3 * np.asarray(batch) * np.asarray(params["w"]))
  np.testing.assert_array_equal(masks["w"], _np_top_k_mask([g_times_w], 2)[0])


def test_gmp_raises_at_init_when_the_final_density_keeps_nothing():
  with pytest.raises(ValueError, match=r"gmp keeps floor\(4 entries \* "
                     r"final_density 0.1\) = 0 entries; raise the final_dens"):
    optax_gsm.gmp(0.1, 0, 1, 1).init({"w": jnp.ones((2, 2))})
  params = {"v": jnp.ones((100, 10)), "w": jnp.ones((16, 10))}
  optax_gsm.gmp(0.005, 0, 1, 1).init(params)  # 5 of 1160 over the pool
  with pytest.raises(ValueError, match=r"gmp at leaf \['w'\] keeps "
                     r"floor\(160 entries \* final_density 0.005\) = 0"):
    optax_gsm.gmp(0.005, 0, 1, 1, scope="layer").init(params)
