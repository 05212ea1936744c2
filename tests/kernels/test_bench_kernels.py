"""`attnlab bench kernels`: the rows it writes, the unmasked-work FLOP count, CPU notes."""

import json

import numpy as np

from attnlab import cli
from attnlab.bench import kernels as K


def test_allowed_pairs_count_the_mask():
  """The analytic pair count equals the mask's dense() sum for every pattern."""
  seq, window, density = 48, 10, 0.25
  for pattern in K.PATTERNS:
    mask = K.pattern_mask(pattern, seq, window, density)
    dense = seq * seq if mask is None else int(np.asarray(mask.dense(seq, seq)).sum())
    assert K.allowed_pairs(pattern, seq, window, density) == dense, pattern
  assert K.allowed_pairs("causal", seq, window, density) == seq * (seq + 1) // 2
  assert abs(K.allowed_pairs("band", 1000, window, 0.1) / 1000 ** 2 - 0.1) < 0.01


def test_cli_rows_on_cpu(tmp_path, capsys):
  out = tmp_path / "k.json"
  rc = cli.main(["bench", "kernels", "--seq", "64", "--heads", "2", "--head-dim", "16", "--repeats", "1",
                 "--patterns", "causal", "--impls", "xla,pallas,jax_xla,jax_cudnn", "--json", str(out)])
  assert rc == 0
  rows = {r["impl"]: r for r in json.loads(out.read_text())["rows"]}
  assert rows["xla"]["fwd_ms"] > 0 and rows["xla"]["fwdbwd_tflops"] > 0
  assert rows["jax_xla"]["fwd_vs_peer"] == 1.0  # the peer is its own baseline
  assert rows["xla"]["fwd_vs_peer"] == rows["xla"]["fwd_ms"] / rows["jax_xla"]["fwd_ms"]
  flops = K.unmasked_flops("causal", 64, 1, 2, 16, 1024, 0.1)[0]
  assert abs(rows["xla"]["fwd_tflops"] - flops / (rows["xla"]["fwd_ms"] * 1e-3) / 1e12) < 1e-12
  if rows["pallas"].get("fwd_ms") is None:  # CPU: the kernel is reported, not run
    assert "needs GPU/TPU" in rows["pallas"]["note"]
    assert "cudnn needs a GPU" in rows["jax_cudnn"]["note"]
  assert "kernel benchmark" in capsys.readouterr().out


def test_cli_linear_rows_on_cpu(tmp_path):
  """--family linear: the xla rows are timed with the chunk form's FLOPs; on CPU the Pallas
  kernel and the fla peer are rows with their reasons."""
  out = tmp_path / "lin.json"
  rc = cli.main(["bench", "kernels", "--family", "linear", "--seq", "64", "--heads", "2", "--head-dim", "16",
                 "--chunk", "16", "--repeats", "1", "--patterns", "head,diag", "--json", str(out)])
  assert rc == 0
  rows = {(r["pattern"], r["impl"]): r for r in json.loads(out.read_text())["rows"]}
  assert set(rows) == {(p, i) for p in ("head", "diag") for i in K.LINEAR_IMPLS}
  for pattern in ("head", "diag"):
    xla = rows[pattern, "xla"]
    assert xla["fwd_ms"] > 0
    assert abs(xla["fwd_tflops"] - K.linear_flops(64, 1, 2, 16, 16)[0] / (xla["fwd_ms"] * 1e-3) / 1e12) < 1e-12
    if rows[pattern, "pallas"].get("fwd_ms") is None:  # CPU: reported, not run
      assert "needs GPU" in rows[pattern, "pallas"]["note"]
      assert "fla" in rows[pattern, "fla"]["note"]
