"""Helpers that only the examples, benchmarks and tests use.

Models (the paper's nets and the deep nets of the evidence), dataset readers
and the sparse MLP forward pass live here, outside the ``optax_gsm`` package:
the library holds only the transformations and what users call. Run scripts
from the repository root (``python examples/demo_digits.py``); each puts the
root on ``sys.path`` so that ``from examples.common import models`` works.
"""
