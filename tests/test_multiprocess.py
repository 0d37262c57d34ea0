"""Two processes train with gsm_sgd over jax.distributed (CPU, gloo)."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

import optax_gsm

import _multiprocess_worker as worker

_WORKER = pathlib.Path(__file__).with_name("_multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_processes(num: int, tmp_path: pathlib.Path) -> list[dict]:
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  outs = [tmp_path / f"params_{i}.npz" for i in range(num)]
  procs = [subprocess.Popen(
      [sys.executable, str(_WORKER), str(i), str(num), str(port), str(out)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
           for i, out in enumerate(outs)]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=120)[0])
  finally:
    for proc in procs:
      proc.kill()
  for i, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f"process {i} failed:\n{log[-3000:]}"
  return [dict(np.load(out)) for out in outs]


def _masks(params: dict) -> list[np.ndarray]:
  _, masks = optax_gsm.prune(params, compression=5)
  return [np.asarray(m) for m in jax.tree.leaves(masks)]


def test_two_processes_match_one(tmp_path):
  first, second = _run_processes(2, tmp_path)
  assert first.keys() == second.keys() and len(first) == 4
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  # Bit for bit the same as one process driving the same 2-device mesh ...
  one_process = worker.train(worker.make_mesh(jax.devices()[:2]))
  for name in first:
    np.testing.assert_array_equal(first[name], one_process[name],
                                  err_msg=name)
  # ... and up to float rounding (the batch mean is summed in another order)
  # the same as one device, with the same kept set.
  one_device = worker.train(None)
  for name in first:
    np.testing.assert_allclose(first[name], one_device[name], atol=1e-6,
                               err_msg=name)
  for a, b in zip(_masks(first), _masks(one_device)):
    np.testing.assert_array_equal(a, b)
