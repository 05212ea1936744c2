"""DESIGN.md's layering, checked on the source: nothing imports a layer above it.

kernels_pallas <- attention <- models <- tasks <- train <- sweep / reproduce / analysis / bench <- cli.
`data` sits beside `attention` (tasks read it; it imports no other layer and no flax), and
`registry`, `errors`, `config_lib` are shared utilities at the bottom.
"""

import ast
import pathlib


ROOT = pathlib.Path(__file__).resolve().parents[1]

# The rank of each top-level part; a module may import only parts of rank <= its own
# (utilities, rank 0, are importable from anywhere but import nothing ranked above 0).
RANK = {"__init__": 8, "registry": 0, "errors": 0, "config_lib": 0, "kernels_pallas": 1, "data": 1,
        "attention": 2, "models": 3, "tasks": 4, "train": 5, "sweep": 6, "analysis": 6,
        "bench": 6, "reproduce": 6, "cli": 7, "config_loading": 6, "validation": 6, "__main__": 8}
PEERS_ALLOWED = (0, 6)  # utilities may use each other; so may the top-level tools


def _part(module: str) -> str | None:
  """'attnlab.attention.ops' -> 'attention'; 'kernels_pallas.x' -> 'kernels_pallas'."""
  parts = module.split(".")
  if parts[0] == "kernels_pallas":
    return "kernels_pallas"
  if parts[0] != "attnlab" or len(parts) < 2:
    return None
  return parts[1]


def _imports(path: pathlib.Path) -> list[str]:
  tree = ast.parse(path.read_text())
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.append(node.module)
  return out


def _violations() -> list[str]:
  bad = []
  for path in sorted((ROOT / "attnlab").rglob("*.py")) + sorted((ROOT / "kernels_pallas").rglob("*.py")):
    rel = path.relative_to(ROOT).with_suffix("")
    own = _part(".".join(rel.parts))
    if own not in RANK:
      bad.append(f"{rel}: part {own!r} has no rank in tests/test_layering.py")
      continue
    for module in _imports(path):
      other = _part(module)
      if other is None or other == own:
        continue
      if other not in RANK or RANK[other] > RANK[own] or (RANK[own] == RANK[other] and RANK[own] not in PEERS_ALLOWED):
        bad.append(f"{rel} imports {module}")
  return bad


def test_no_module_imports_a_layer_above_it():
  assert _violations() == []


def test_kernels_pallas_depends_on_jax_only():
  for path in (ROOT / "kernels_pallas").rglob("*.py"):
    for module in _imports(path):
      assert not module.startswith("attnlab"), f"{path.name} imports {module}"


def test_the_check_bites(tmp_path, monkeypatch):
  """A model module importing the trainer is reported."""
  fake = ROOT / "attnlab" / "models" / "_layering_canary.py"
  fake.write_text("from attnlab.train import trainer\n")
  try:
    assert any("_layering_canary imports attnlab.train" in v for v in _violations())
  finally:
    fake.unlink()


def test_data_does_not_import_flax():
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "-c", "import sys, attnlab.data; print('flax' in sys.modules)"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
  assert out.stdout.strip() == "False"
