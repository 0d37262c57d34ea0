"""One import direction inside optax_gsm, a clean namespace, old names warn."""

import ast
import importlib
import os
import subprocess
import sys
import warnings

import jax.numpy as jnp
import pytest

import optax_gsm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "optax_gsm")


def _module_imports():
  """{module: {optax_gsm modules it imports}}, read with ``ast``.

  Every import counts, at module level or inside a function, so a cycle
  cannot hide in a function-local import.
  """
  modules = {f"optax_gsm.{f[:-3]}": os.path.join(PACKAGE, f)
             for f in os.listdir(PACKAGE) if f.endswith(".py")}
  modules["optax_gsm"] = modules.pop("optax_gsm.__init__")
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        base = node.module or ""
        # `from optax_gsm import _pool` is an edge to the module _pool; a
        # name that is no module is an edge to the module that defines it.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                 else base for a in node.names]
      else:
        continue
      found |= {n for n in names if n in modules} - {module}
    graph[module] = found
  return graph


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_optax_gsm_modules():
  graph = _module_imports()
  assert graph["optax_gsm._gsm"] >= {"optax_gsm._scores"}
  assert "optax_gsm._gsm" in graph["optax_gsm"]
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize("low, high", [
    ("optax_gsm._pool", "optax_gsm._scores"),
    ("optax_gsm._selection", "optax_gsm._scores"),
    ("optax_gsm._scores", "optax_gsm._gsm"),
    ("optax_gsm._scores", "optax_gsm._pruning"),
    ("optax_gsm._gsm", "optax_gsm._alias"),
    ("optax_gsm._pruning", "optax_gsm._alias"),
])
def test_lower_modules_do_not_import_higher_ones(low, high):
  graph = _module_imports()
  seen, todo = set(), [low]
  while todo:  # everything `low` reaches
    node = todo.pop()
    if node not in seen:
      seen.add(node)
      todo += graph[node]
  assert high not in seen


def test_all_is_a_sorted_tuple_of_existing_public_names():
  assert isinstance(optax_gsm.__all__, tuple)
  assert list(optax_gsm.__all__) == sorted(optax_gsm.__all__)
  for name in optax_gsm.__all__:
    assert not name.startswith("_")
    assert getattr(optax_gsm, name) is not None
  assert dir(optax_gsm) == sorted(optax_gsm.__all__)


OLD_NAMES = {  # 0.1 name: (what the warning says to use, where it lives)
    "CRITERIA": ('"taylor" and "magnitude"', "optax_gsm._scores"),
    "SELECTIONS": ("docstring of gsm", "optax_gsm._selection"),
    "ordered_key": ("top_k_masks", "optax_gsm._selection"),
    "num_filters": ("structured_prune", "optax_gsm.structured"),
    "sparse_arrays": ("save_sparse", "optax_gsm.export"),
    "models": ("examples/common/models.py", None),
    "datasets": ("examples/common/datasets.py", None),
    "sparse_mlp_apply": ("examples/common/models.py", "examples.common.models"),
}


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_deprecated_name_warns_once_with_the_new_name_and_works(name):
  instead, home = OLD_NAMES[name]
  optax_gsm._WARNED.discard(name)  # pylint: disable=protected-access
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = getattr(optax_gsm, name)
    second = getattr(optax_gsm, name)
  deprecations = [w for w in caught
                  if issubclass(w.category, DeprecationWarning)]
  assert len(deprecations) == 1, [str(w.message) for w in caught]
  message = str(deprecations[0].message)
  assert f"optax_gsm.{name} is deprecated" in message
  assert instead in message, message
  assert deprecations[0].filename == __file__  # points at the caller
  assert first is second
  if home is None:  # a module of the repository's examples
    assert first is importlib.import_module(f"examples.common.{name}")
  else:
    assert first is getattr(importlib.import_module(home), name)
  assert name not in optax_gsm.__all__


def test_deprecated_values_still_work():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    assert set(optax_gsm.CRITERIA) >= {"taylor", "magnitude"}
    assert "histogram" in optax_gsm.SELECTIONS
    assert optax_gsm.num_filters({"w": jnp.ones((3, 4))}) == 4
    assert callable(optax_gsm.models.LeNet5)


def test_unknown_name_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'gsm_adam'"):
    getattr(optax_gsm, "gsm_adam")


def test_deprecated_name_warns_once_per_process():
  """In a fresh interpreter: two uses, one warning."""
  code = ("import warnings; warnings.simplefilter('always'); "
          "import optax_gsm\n"
          "with warnings.catch_warnings(record=True) as w:\n"
          "  warnings.simplefilter('always')\n"
          "  optax_gsm.ordered_key; optax_gsm.ordered_key\n"
          "print(sum(issubclass(x.category, DeprecationWarning) for x in w))")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        capture_output=True, text=True, check=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.stdout.strip() == "1", done.stdout + done.stderr
