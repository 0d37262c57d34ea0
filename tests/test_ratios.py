"""One ratio, three spellings; one leaf name; the ratio read from the state."""

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm
from optax_gsm import _pool

PARAMS = {"params": {"Dense_0": {"kernel": jnp.arange(1.0, 101.0).reshape(
    10, 10), "bias": jnp.ones(10)}, "Dense_1": {"kernel": jnp.linspace(
        -3.0, 3.0, 30).reshape(10, 3)}}}


def _ratio_calls():
  """Every public function that takes a ratio, called with ``**ratio``."""
  params = PARAMS
  loss = lambda p, batch: jnp.sum(p["params"]["Dense_0"]["kernel"] ** 2)
  return {
      "gsm": lambda r: optax_gsm.gsm(**r),
      "gsm_sgd": lambda r: optax_gsm.gsm_sgd(0.1, **r),
      "hard_prune_at": lambda r: optax_gsm.hard_prune_at(3, **r),
      "prune": lambda r: optax_gsm.prune(params, **r),
      "snip_masks": lambda r: optax_gsm.snip_masks(loss, params, None, **r),
      "lottery_ticket": lambda r: optax_gsm.lottery_ticket(params, params,
                                                           **r),
      "prune_share": lambda r: optax_gsm.prune_share(params, **r),
      "structured_gsm": lambda r: optax_gsm.structured_gsm(**r),
      "structured_prune": lambda r: optax_gsm.structured_prune(params, **r),
      "synflow": lambda r: optax_gsm.synflow(
          lambda p, x: x @ p["params"]["Dense_0"]["kernel"] @ p["params"][
              "Dense_1"]["kernel"], params, (1, 10), **r),
  }


@pytest.mark.parametrize("name", sorted(_ratio_calls()))
@pytest.mark.parametrize("two", [
    dict(compression=10, density=0.1), dict(density=0.1, sparsity=0.9),
    dict(compression=10, sparsity=0.9)])
def test_a_ratio_in_two_spellings_is_a_type_error_naming_both(name, two):
  first, second = two
  with pytest.raises(TypeError, match=f"given twice, as {first} and "
                     f"{second}"):
    _ratio_calls()[name](two)


def test_gsm_metrics_and_checkpoint_name_both_spellings_too():
  opt = optax_gsm.gsm_sgd(0.1, density=0.1)
  state = opt.init(PARAMS)
  with pytest.raises(TypeError, match="given twice, as density and sparsity"):
    optax_gsm.gsm_metrics(state, PARAMS, density=0.1, sparsity=0.9)


@pytest.mark.parametrize("name", sorted(_ratio_calls()))
def test_sparsity_keeps_what_the_complementary_density_keeps(name):
  call = _ratio_calls()[name]
  with_density, with_sparsity = call(dict(density=0.2)), call(
      dict(sparsity=0.8))
  if isinstance(with_density, optax.GradientTransformation):
    state_d = with_density.init(PARAMS)
    state_s = with_sparsity.init(PARAMS)
    grads = jax.tree.map(lambda x: x * 0.5 + 1.0, PARAMS)
    with_density = with_density.update(grads, state_d, PARAMS)[0]
    with_sparsity = with_sparsity.update(grads, state_s, PARAMS)[0]
  jax.tree.map(np.testing.assert_array_equal, with_density, with_sparsity)


@pytest.mark.parametrize("bad, error, match", [
    (1.0, ValueError, r"sparsity must lie in \[0, 1\)"),
    (-0.1, ValueError, r"sparsity must lie in \[0, 1\)"),
    (float("nan"), ValueError, r"sparsity must lie in \[0, 1\)"),
    (True, TypeError, "sparsity must be a number"),
    (jnp.bfloat16(0.5), TypeError, "sparsity must be a number.*hyperparam_dtype"),
    (np.ones(2) / 2, TypeError, "sparsity must be a number"),
    (optax.constant_schedule(0.5), TypeError, "inject_hyperparams"),
])
def test_bad_sparsity_is_named(bad, error, match):
  with pytest.raises(error, match=match):
    optax_gsm.gsm(sparsity=bad)
  with pytest.raises(error, match=match):
    optax_gsm.prune(PARAMS, sparsity=bad)


def test_no_ratio_names_all_three_spellings():
  with pytest.raises(ValueError, match="exactly one of compression .*density"
                     " .*and sparsity"):
    optax_gsm.prune(PARAMS)


def _decimal_cases(rng):
  sizes = list(range(1, 30)) + [97, 1000, 4096, 266_200, 10**6 + 3,
                                 110_000_000]
  for n in sizes:
    for digits in (1, 2, 3, 4):
      js = (range(10**digits) if 10**digits <= 100
            else rng.integers(0, 10**digits, 60))
      for j in js:
        yield n, f"{int(j) / 10**digits:.{digits}f}"


def test_sparsity_q_is_exact_against_decimal_arithmetic():
  """s written with 1 to 4 decimals keeps floor(N (1 - s)), exactly.

  Computing 1 - s in binary would not: s's rounding error, tiny next to s,
  is large next to 1 - s (N = 29, s = 28/29 kept 0 instead of 1).
  """
  mismatches = []
  for n, text in _decimal_cases(np.random.default_rng(0)):
    want = math.floor(n * (1 - fractions.Fraction(text)))
    if want == 0:
      continue
    for s in (float(text), np.float32(text), np.float64(text)) + (
        (jnp.float32(float(text)),) if n > 1000 else ()):
      got = _pool.num_kept(n, *_pool.canonical_ratio(None, None, s, "t"))
      if got != want:
        mismatches.append((n, text, type(s).__name__, got, want))
  assert not mismatches, mismatches[:10]


def test_injected_sparsity_under_jit():
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(learning_rate=0.1,
                                                    sparsity=0.75)
  state = opt.init(PARAMS)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  _, state = jax.jit(opt.update)(grads, state, PARAMS)
  assert optax_gsm.gsm_metrics(state)["gsm/active"] == 130 // 4


def test_leaf_names_agree_between_report_and_metrics():
  opt = optax_gsm.gsm_sgd(0.1, compression=10)
  _, state = opt.update(jax.tree.map(jnp.ones_like, PARAMS),
                        opt.init(PARAMS), PARAMS)
  _, masks = optax_gsm.prune(PARAMS, compression=10)
  report = [leaf.path for leaf in optax_gsm.sparsity_report(masks).leaves]
  metrics = sorted(k[len("gsm/density/"):] for k in optax_gsm.gsm_metrics(
      state, PARAMS) if k.startswith("gsm/density/"))
  assert report == metrics == ["Dense_0/kernel", "Dense_1/kernel"]
  assert "Dense_0/kernel" in str(optax_gsm.sparsity_report(masks))
  assert "params/" not in str(optax_gsm.sparsity_report(masks))


def test_gsm_metrics_reads_the_ratio_from_the_state():
  opt = optax_gsm.gsm_sgd(0.1, compression=10)
  state = opt.init(PARAMS)
  assert "gsm/prune_share" not in optax_gsm.gsm_metrics(state, PARAMS)
  _, state = opt.update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)
  from_state = optax_gsm.gsm_metrics(state, PARAMS)
  given = optax_gsm.gsm_metrics(state, PARAMS, compression=10)
  assert from_state == given
  assert from_state["gsm/active"] == 130 // 10
  assert from_state["gsm/prune_share"] == pytest.approx(float(
      optax_gsm.prune_share(PARAMS, compression=10)))


def test_checkpoint_save_refuses_a_ratio_the_state_disagrees_with(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  from optax_gsm import checkpoint  # pylint: disable=g-import-not-at-top
  opt = optax_gsm.gsm_sgd(0.1, compression=10)
  state = opt.init(PARAMS)
  with ocp.CheckpointManager(tmp_path) as manager:
    # Before the first update the state has no Q to compare with.
    assert checkpoint.save(manager, 0, PARAMS, state, compression=5)
    manager.wait_until_finished()
    _, state = opt.update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)
    with pytest.raises(ValueError, match=r"compression=5 keeps 26 of 130 "
                       r"entries, but the GSM state keeps 13"):
      checkpoint.save(manager, 1, PARAMS, state, compression=5)
    with pytest.raises(ValueError, match="sparsity=0.5 keeps 65"):
      checkpoint.save(manager, 1, PARAMS, state, sparsity=0.5)
    with pytest.raises(TypeError, match="as compression and density"):
      checkpoint.save(manager, 1, PARAMS, state, compression=10,
                      density=0.1)
    for step, ratio in enumerate((dict(compression=10), dict(density=0.1),
                                  dict(sparsity=0.9)), start=2):
      assert checkpoint.save(manager, step, PARAMS, state, **ratio)
      manager.wait_until_finished()
