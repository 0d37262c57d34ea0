"""A compact ResNet-50 (v1.5, Flax linen) for the accelerator benchmark.

Params are float32; ``dtype`` (bfloat16 by default) is the compute dtype.
``width`` scales every layer (64 is the standard net, 25.6M parameters with
1000 classes), so a CPU smoke run can use a narrow copy.

Example:
  >>> import jax, jax.numpy as jnp
  >>> net = ResNet50(num_classes=10, width=8)
  >>> x = jnp.zeros((2, 32, 32, 3))
  >>> variables = net.init(jax.random.key(0), x, train=False)
  >>> net.apply(variables, x, train=False).shape
  (2, 10)
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Bottleneck(nn.Module):
  """1x1, 3x3 (strided), 1x1 convolutions with a projection when needed."""
  filters: int
  strides: int = 1
  dtype: Any = jnp.bfloat16

  @nn.compact
  def __call__(self, x, train: bool):
    conv = partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                   dtype=self.dtype)
    y = nn.relu(norm()(conv(self.filters, (1, 1))(x)))
    y = nn.relu(norm()(conv(self.filters, (3, 3), strides=self.strides)(y)))
    y = norm(scale_init=nn.initializers.zeros)(conv(4 * self.filters,
                                                    (1, 1))(y))
    if x.shape != y.shape:
      x = norm()(conv(4 * self.filters, (1, 1), strides=self.strides)(x))
    return nn.relu(x + y)


class ResNet50(nn.Module):
  """ResNet-50: stages of 3, 4, 6 and 3 bottlenecks."""
  num_classes: int = 1000
  width: int = 64
  dtype: Any = jnp.bfloat16

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Conv(self.width, (7, 7), strides=2, use_bias=False,
                dtype=self.dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     dtype=self.dtype)(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding="SAME")
    for stage, blocks in enumerate((3, 4, 6, 3)):
      for block in range(blocks):
        x = Bottleneck(self.width * 2**stage,
                       strides=2 if stage > 0 and block == 0 else 1,
                       dtype=self.dtype)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
