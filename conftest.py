"""Test session setup: 8 fake CPU devices, so sharding tests see a mesh.

This runs before any test module or doctest imports JAX's backend; the
device count can only be set before the first computation.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)
