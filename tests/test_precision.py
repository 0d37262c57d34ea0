"""Mixed precision: bf16/f16 params still prune with float32 master copies."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm

_STEPS = 2000  # the 20,000-step run, with 10x the per-step decay


def _pure_decay_shrink(dtype, **kwargs):
  """log(sum |w_end| / sum |w_0|) of gsm_sgd with zero loss gradients."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # weight_decay_for's reachability note
    decay = optax_gsm.weight_decay_for(1e-2, _STEPS, momentum=0.99)
  opt = optax_gsm.gsm_sgd(1e-2, compression=4, momentum=0.99,
                          weight_decay=decay, **kwargs)
  w0 = jax.random.normal(jax.random.key(0), (32, 32)).astype(dtype)
  params = {"w": w0}
  state = opt.init(params)

  def step(carry, _):
    p, s = carry
    u, s = opt.update(jax.tree.map(jnp.zeros_like, p), s, p)
    return (optax.apply_updates(p, u), s), None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, length=_STEPS))(
      (params, state))
  assert params["w"].dtype == jnp.dtype(dtype)
  return math.log(float(jnp.sum(jnp.abs(params["w"].astype(jnp.float32))))
                  / float(jnp.sum(jnp.abs(w0.astype(jnp.float32)))))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_prune_like_float32_with_master(dtype):
  want = _pure_decay_shrink(jnp.float32)
  assert want < -6
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no warning with the fix in place
    got = _pure_decay_shrink(dtype, float32_master=True)
  assert abs(got - want) < 1.0, (got, want)


def test_bf16_params_without_master_do_not_prune_and_warn():
  with pytest.warns(UserWarning, match=r"gsm_sgd: params of dtype bfloat16 "
                    r"round away .* Pass float32_master=True"):
    got = _pure_decay_shrink(jnp.bfloat16)
  # Each step's decay rounds away: far from float32's figure (about -9).
  assert got > -1.0


def test_float32_params_do_not_warn_and_pass_through():
  params = {"w": jnp.arange(6.0).reshape(2, 3) - 2.5, "b": jnp.ones(3)}
  grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
  plain = optax_gsm.gsm_sgd(0.1, compression=2)
  wrapped = optax_gsm.gsm_sgd(0.1, compression=2, float32_master=True)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    s1, s2 = plain.init(params), wrapped.init(params)
  u1, _ = plain.update(grads, s1, params)
  u2, s2 = wrapped.update(grads, s2, params)
  jax.tree.map(np.testing.assert_array_equal, u1, u2)
  assert all(isinstance(m, optax.MaskedNode)
             for m in jax.tree.leaves(s2.master, is_leaf=lambda x: isinstance(
                 x, optax.MaskedNode)))


def test_master_follows_params_changed_outside():
  tx = optax_gsm.float32_master(optax.sgd(1e-4))
  params = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
  grads = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
  state = tx.init(params)
  assert state.master["w"].dtype == jnp.float32
  for _ in range(50):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert float(state.master["w"][0]) == pytest.approx(1 - 50e-4, abs=1e-6)
  # Pruned from outside: the master restarts from the new value, 0.
  params = {"w": params["w"].at[1].set(0), "b": params["b"]}
  updates, state = tx.update(grads, state, params)
  assert float(state.master["w"][1]) == pytest.approx(-1e-4)
  assert float(state.master["w"][0]) == pytest.approx(1 - 51e-4, abs=1e-6)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(grads, state)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("wrap", ["masked", "multi_transform"])
def test_float32_master_inside_masked_and_multi_transform(dtype, wrap):
  # optax hands the wrapped transform MaskedNode for the other group's leaves.
  params = {"a": jnp.full((3, 3), 1.5, dtype), "b": jnp.ones(3, dtype)}
  grads = {"a": jnp.full((3, 3), 0.25, dtype), "b": jnp.ones(3, dtype)}
  inner = lambda: optax_gsm.float32_master(optax.sgd(0.1, momentum=0.9))
  if wrap == "masked":
    tx = optax.masked(inner(), {"a": True, "b": False})
  else:
    tx = optax.multi_transform({"m": inner(), "s": optax.sgd(0.1)},
                               {"a": "m", "b": "s"})
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  # Three momentum steps on "a": 0.025 * (1 + 1.9 + 2.71) = 0.14025.
  np.testing.assert_allclose(np.asarray(params["a"], np.float32),
                             np.asarray(jnp.asarray(1.5 - 0.14025, dtype),
                                        np.float32))
  assert params["a"].dtype == dtype
  # optax.masked passes the other leaves' gradients through as updates.
  expected_b = 1.0 + 3 * 1.0 if wrap == "masked" else 1.0 - 3 * 0.1
  np.testing.assert_allclose(np.asarray(params["b"], np.float32),
                             np.asarray(jnp.asarray(expected_b, dtype),
                                        np.float32), rtol=1e-2)
