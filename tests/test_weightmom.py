"""Tests of the WeightMom-style pruning transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm


def test_training_keeps_pruned_zero_and_reaches_target():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(64, 10)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
  params = {"l1": {"kernel": jnp.asarray(rng.normal(size=(10, 16)) * 0.3,
                                         jnp.float32), "bias": jnp.zeros(16)},
            "l2": {"kernel": jnp.asarray(rng.normal(size=(16, 3)) * 0.3,
                                         jnp.float32), "bias": jnp.zeros(3)}}
  pool, density, window, min_below = 10 * 16 + 16 * 3, 0.2, 4, 3
  opt = optax.chain(optax.sgd(0.05, momentum=0.9),
                    optax_gsm.weightmom(density, begin_step=0, end_step=20,
                                        check_every=2, window=window,
                                        min_below=min_below))

  def loss(p):
    h = jax.nn.relu(x @ p["l1"]["kernel"] + p["l1"]["bias"])
    return jnp.mean((h @ p["l2"]["kernel"] + p["l2"]["bias"] - y) ** 2)

  @jax.jit
  def step(p, s):
    updates, s = opt.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s

  state = opt.init(params)
  prev = None
  for t in range(20 + 2 * window + 1):  # past the forced check at 28
    params, state = step(params, state)
    masks = state[1].masks
    for name in ("l1", "l2"):
      kept = np.asarray(masks[name]["kernel"])
      assert np.all(np.asarray(params[name]["kernel"])[~kept] == 0), t
      if prev is not None:  # pruned for good
        assert not np.any(kept & ~prev[name]), t
    assert masks["l1"]["bias"] is None
    prev = {n: np.asarray(masks[n]["kernel"]) for n in ("l1", "l2")}
  kept = sum(int(m.sum()) for m in prev.values())
  assert kept == int(np.floor(pool * density))
  report = optax_gsm.sparsity_report(params)
  assert report.kept == kept  # survivors are non-zero, pruned are exactly 0


def _run(tx, frames):
  frames = [np.reshape(w, (2, -1)) for w in frames]
  state = tx.init({"w": jnp.asarray(frames[0], jnp.float32)})
  zeros = {"w": jnp.zeros_like(jnp.asarray(frames[0], jnp.float32))}
  masks = []
  update = jax.jit(tx.update)
  for w in frames:
    _, state = update(zeros, state, {"w": jnp.asarray(w, jnp.float32)})
    masks.append(np.asarray(state.masks["w"]).ravel().tolist())
  return masks


def test_hysteresis_m_of_k():
  tx = optax_gsm.weightmom(0.5, begin_step=0, end_step=1, check_every=1,
                           window=4, min_below=3)
  base = [1, 2, 3, 4, 5, 6, 7, 8]
  raised = [1, 2, 3, 40, 5, 6, 7, 8]
  frames = [base, base, base, raised, raised, raised, raised]
  masks = _run(tx, frames)
  t, f = True, False
  # Check 0 keeps all (density 1). Checks 1, 2: entries 0-3 below twice.
  assert masks[0] == masks[1] == masks[2] == [t] * 8
  # Check 3: entries 0-2 below 3 times -> pruned; entry 3 was raised after two
  # below-flags and entry 4 is below for the first time: both kept.
  assert masks[3] == [f, f, f, t, t, t, t, t]
  assert masks[4] == masks[3]  # entry 4 below twice
  # Check 5: entry 4 below 3 of the last 4 -> pruned; target 4 reached.
  assert masks[5] == [f, f, f, t, f, t, t, t]
  assert masks[6] == masks[5]


def test_check_every_skips_steps():
  tx = optax_gsm.weightmom(0.5, begin_step=1, end_step=2, check_every=2,
                           window=1, min_below=1)
  masks = _run(tx, [[1, 2, 3, 4]] * 4)
  # Steps 0 and 2 are not checks (before begin_step, between checks); the
  # check at step 1 still has density 1; the check at step 3 prunes.
  assert masks[:3] == [[True] * 4] * 3
  assert masks[3] == [False, False, True, True]


def test_layer_size_raises_threshold():
  values = np.linspace(0.1, 1.0, 16)
  params = {"small": {"kernel": jnp.asarray(values.reshape(4, 4), jnp.float32)},
            "big": {"kernel": jnp.asarray(np.tile(values, 4).reshape(8, 8),
                                          jnp.float32)}}
  def final_density(size_power):
    tx = optax_gsm.weightmom(0.5, begin_step=0, end_step=1, check_every=1,
                             window=1, min_below=1, sparsity_power=0.0,
                             size_power=size_power)
    state = tx.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    update = jax.jit(tx.update)
    for _ in range(3):
      _, state = update(zeros, state, params)
    return {k: float(np.mean(state.masks[k]["kernel"])) for k in params}
  flat = final_density(0.0)
  sized = final_density(1.0)
  # Same magnitudes: without the size term both layers keep about half.
  assert abs(flat["small"] - flat["big"]) <= 1 / 16 + 1e-9
  assert sized["big"] < 0.5 < sized["small"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=33), "window"),
    (dict(window=4, min_below=5), "min_below"),
    (dict(check_every=0), "check_every"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(selection="nope"), "selection"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_gsm.weightmom(0.5, 0, 10, **kwargs)


def test_needs_params():
  tx = optax_gsm.weightmom(0.5, 0, 10)
  p = {"w": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="needs params"):
    tx.update(p, tx.init(p))


def test_raises_at_init_when_the_final_density_keeps_nothing():
  with pytest.raises(ValueError, match=r"weightmom keeps floor\(4 entries \* "
                     r"final_density 0.1\) = 0 entries"):
    optax_gsm.weightmom(0.1, 0, 1, 1).init({"w": jnp.ones((2, 2))})
