"""Batch-norm statistics after a hard prune (Flax NNX models).

A hard prune changes what every batch-normalized layer sees: the zeroed
weights shift the mean and shrink the variance of its inputs, while the
running statistics still describe the dense net. Re-estimating them from a
few training batches, with the weights fixed, restores the match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def recalibrate_batch_stats(model: nnx.Module, batches: Iterable[Any],
                            **call_kwargs: Any) -> int:
  r"""Re-estimates the running statistics of every ``nnx.BatchNorm`` in place.

  Each batch is run through ``model`` in training mode with the weights
  fixed; the running mean and variance of every ``nnx.BatchNorm`` become the
  plain average of the per-batch statistics,

  .. math::
    \mu \leftarrow \tfrac{1}{K} \textstyle\sum_{k=1}^{K} \mu_k, \qquad
    \sigma^2 \leftarrow \tfrac{1}{K} \textstyle\sum_{k=1}^{K} \sigma_k^2,

  instead of the exponential average of training. Call it after
  :func:`optax_gsm.prune` (or after the step of ``prune_step``) and before
  evaluating or exporting; 10 to 50 batches of the training split suffice.
  The modules' ``momentum`` and the model's train/eval mode are restored;
  nothing else (``nnx.Param``, dropout state aside) is changed.

  Args:
    model: a Flax NNX module holding ``nnx.BatchNorm`` layers.
    batches: an iterable of inputs, each passed as ``model(batch,
      **call_kwargs)``.
    **call_kwargs: extra keyword arguments of the model's call.

  Returns:
    K, the number of batches used.

  Raises:
    ValueError: if ``model`` has no ``nnx.BatchNorm`` or ``batches`` is empty.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> import optax_gsm
    >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
    ...                        nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
    >>> xs = [jax.random.normal(jax.random.key(i), (64, 3)) + 5.0
    ...       for i in range(4)]
    >>> optax_gsm.recalibrate_batch_stats(model, xs)
    4
    >>> mean = jnp.mean(jnp.stack([model.layers[0](x).mean(0) for x in xs]), 0)
    >>> bool(jnp.allclose(model.layers[1].mean[...], mean, atol=1e-5))
    True
  """
  norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
  if not norms:
    raise ValueError("recalibrate_batch_stats: model holds no nnx.BatchNorm.")
  saved = [(m, m.momentum, m.use_running_average) for m in norms]
  k = 0
  try:
    for m in norms:
      m.use_running_average = False
    for k, batch in enumerate(batches, start=1):
      for m in norms:
        m.momentum = (k - 1) / k  # new = (k-1)/k old + 1/k batch: the mean
      model(batch, **call_kwargs)
  finally:
    for m, momentum, use_running_average in saved:
      m.momentum, m.use_running_average = momentum, use_running_average
  if k == 0:
    raise ValueError("recalibrate_batch_stats: batches is empty.")
  return k


def dead_filter_outputs(model: nnx.Module) -> dict[str, Any]:
  r"""What each batch norm outputs for a channel whose conv kernel is all 0.

  A channel :math:`c` whose kernel slice the prune zeroed entirely (no bias,
  as in ResNets) feeds batch norm a constant 0, so in evaluation mode the
  layer outputs the constant

  .. math::
    \gamma_c \, (0 - \mu_c) / \sqrt{\sigma_c^2 + \epsilon} + \beta_c

  for every input: a learned offset, not a zero. This reports, for every
  ``nnx.BatchNorm`` that follows a ``nnx.Conv`` or ``nnx.Linear`` of the
  same width inside one module (the pair named by attribute order), the
  dead channels and that constant.

  Args:
    model: a Flax NNX module.

  Returns:
    A dict from the batch norm's path (``"blocks/0/bn1"``) to a dict with
    ``dead`` (the channel indices) and ``constant`` (their outputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import optax_gsm
    >>> class ConvBN(nnx.Module):
    ...   def __init__(self):
    ...     self.conv = nnx.Conv(1, 2, (3, 3), use_bias=False,
    ...                          rngs=nnx.Rngs(0))
    ...     self.bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    >>> model = ConvBN()
    >>> model.conv.kernel[...] = model.conv.kernel[...].at[..., 1].set(0.0)
    >>> model.bn.mean[...] = jnp.array([0.0, 0.5])  # var 1, scale 1, bias 0
    >>> report = optax_gsm.dead_filter_outputs(model)["bn"]
    >>> report["dead"], [round(c, 4) for c in report["constant"]]
    ([1], [-0.5])
  """
  out = {}
  for path, module in nnx.iter_graph(model):
    if not isinstance(module, nnx.Module):
      continue
    last = None
    for name, child in vars(module).items():
      if isinstance(child, (nnx.Conv, nnx.Linear)):
        last = child
      elif isinstance(child, nnx.BatchNorm) and last is not None:
        kernel = last.kernel[...]
        if kernel.shape[-1] == child.num_features:
          alive = jnp.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
          dead = jnp.flatnonzero(~alive)
          scale = 1.0 if child.scale is None else child.scale[...][dead]
          bias = 0.0 if child.bias is None else child.bias[...][dead]
          const = (scale * (0.0 - child.mean[...][dead])
                   * jax.lax.rsqrt(child.var[...][dead] + child.epsilon)
                   + bias)
          key = "/".join(str(p) for p in (*path, name))
          out[key] = {"dead": dead.tolist(), "constant": const.tolist()}
        last = None
  return out
