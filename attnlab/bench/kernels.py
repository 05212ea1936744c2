"""`attnlab bench kernels`: softmax attention kernels side by side on the same shapes.

    attnlab bench kernels --seq 1024,4096,16384 --heads 16 --head-dim 128 --dtype bfloat16 \
        [--patterns full,causal,window,band] [--impls reference,xla,pallas,jax_xla,jax_cudnn,tokamax] \
        [--json out.json]

Impls: attnlab's `softmax_attention(impl=reference | xla | pallas)` (the Pallas row is the
block-sparse flash kernel of `kernels_pallas`), and the peers `jax.nn.dot_product_attention`
with implementation="xla" (`jax_xla`) and "cudnn" (`jax_cudnn`), and
`tokamax.dot_product_attention` where tokamax imports. An impl that cannot run a case is a
row with its reason in `note` (on CPU: pallas "needs GPU/TPU", cudnn "needs a GPU").

Patterns (all [T, T] self-attention): `full` (no mask), `causal`, `window` (causal,
--window keys per query) and `band` (non-causal band of +-density*T/2 keys, so about
--density of the full score matrix: the block-sparse case).

Columns: median forward and forward+backward milliseconds; achieved TFLOP/s counting only
unmasked work (forward 4*B*Hq*D per allowed (query, key) pair, backward 2.5x forward as in
FlashAttention-2's accounting); `vs_peer` = time / the fastest peer's (jax_cudnn, else jax_xla)
time on the same pattern and length; `vs_dense` = time / that peer's time on `full` at the
same length (below 1 = faster). --json writes {environment, rows}.

`--family linear` benchmarks the chunked linear attention kernel instead (causal, Dk = Dv =
--head-dim, chunk --chunk): patterns are its decays (`none`: plain linear attention;
`head`: a per-head constant, RetNet / Lightning; `token`: a per-token scalar; `diag`:
per-token diagonal gates, GLA, through op "linear.gla"), impls attnlab's `xla` (the
chunked scan) and `pallas` (`kernels_pallas.chunked_linear`), and the peer `fla`
(flash-linear-attention's Triton `chunk_simple_gla` / `chunk_gla` in PyTorch, GPU only,
where installed). FLOPs of the chunk form: forward 4 Dk Dv + 2 C (Dk + Dv) per token and
head (state update, inter- and intra-chunk products), backward 2x forward; `vs_peer` is
time / fla's time, `vs_dense` is empty.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.api import FAMILY, softmax_attention
from attnlab.bench.timing import default_max_memory_mb, measure, median_ms, use_clock

PATTERNS = ("full", "causal", "window", "band")
ATTNLAB_IMPLS = ("reference", "xla", "pallas")
PEERS = ("jax_cudnn", "jax_xla")  # in order of preference as the ratio baseline
IMPLS = ATTNLAB_IMPLS + ("jax_xla", "jax_cudnn", "tokamax")
REFERENCE_MAX_SCORE_BYTES = 8 * 2 ** 30  # the reference materialises [B, H, T, T] fp32 scores
LINEAR_PATTERNS = ("none", "head", "token", "diag")  # the linear family's decays
LINEAR_IMPLS = ("xla", "pallas", "fla")


def pattern_extent(pattern: str, seq: int, window: int, density: float) -> tuple[int, int]:
  """(left, right): query i attends keys [i - left, i + right] (clipped to [0, T))."""
  if pattern == "full":
    return seq, seq
  if pattern == "causal":
    return seq, 0
  if pattern == "window":
    return max(window - 1, 0), 0
  if pattern == "band":
    half = max(1, round(density * seq / 2))
    return half, half
  raise ValueError(f"unknown pattern {pattern!r}; valid: {', '.join(PATTERNS)}")


def pattern_mask(pattern: str, seq: int, window: int, density: float):
  """The attnlab Mask of a pattern (None for full)."""
  left, right = pattern_extent(pattern, seq, window, density)
  if pattern == "full":
    return None
  if pattern == "causal":
    return M.Causal()
  if pattern == "window":
    return M.Causal() & M.SlidingWindow(left)
  return M.SlidingWindow(left, right)


def allowed_pairs(pattern: str, seq: int, window: int, density: float) -> int:
  """Number of allowed (query, key) pairs of the pattern at length seq."""
  left, right = pattern_extent(pattern, seq, window, density)
  i = np.arange(seq, dtype=np.int64)
  return int(np.sum(np.minimum(i + right, seq - 1) - np.maximum(i - left, 0) + 1))


def unmasked_flops(pattern, seq, batch, heads, head_dim, window, density) -> tuple[float, float]:
  """(forward, forward+backward) FLOPs of the unmasked work: 2 matmuls of 2*D per pair
  forward; backward 2.5x forward (FlashAttention-2's count)."""
  fwd = 4.0 * batch * heads * head_dim * allowed_pairs(pattern, seq, window, density)
  return fwd, 3.5 * fwd


def _peer_fn(impl: str, pattern: str, seq: int, window: int, density: float):
  """jax.nn.dot_product_attention (or tokamax's) for the pattern, or a reason string."""
  left, right = pattern_extent(pattern, seq, window, density)
  kwargs: dict[str, Any] = {"is_causal": pattern in ("causal", "window")}
  if pattern in ("window", "band"):
    kwargs["local_window_size"] = (left, right)
  if impl == "tokamax":
    try:
      import tokamax  # noqa: PLC0415  (optional peer)
    except ImportError:
      return "tokamax is not installed"
    return lambda q, k, v: tokamax.dot_product_attention(q, k, v, **kwargs)
  implementation = {"jax_xla": "xla", "jax_cudnn": "cudnn"}[impl]
  if implementation == "cudnn" and jax.default_backend() != "gpu":
    return f"cudnn needs a GPU (backend is {jax.default_backend()})"
  return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=implementation, **kwargs)


def _attnlab_fn(impl: str, q, k, v, mask, pallas_block: int | None = None):
  """softmax_attention(impl=...) for the mask, or a reason string (from the dispatch table).
  pallas_block: the Pallas kernel's tile edge (None: its default)."""
  if impl == "reference" and q.shape[0] * q.shape[2] * q.shape[1] * k.shape[1] * 4 > REFERENCE_MAX_SCORE_BYTES:
    return f"reference not run: its [B, H, T, T] scores exceed {REFERENCE_MAX_SCORE_BYTES / 2 ** 30:.0f} GiB"
  try:
    D.resolve(FAMILY, impl, q, k, v, mask=mask)
  except ValueError as e:
    reason = str(e)
    if impl == "pallas" and "GPU backend" in reason:
      return f"needs GPU/TPU (backend is {jax.default_backend()}; interpret mode is for tests)"
    return reason
  if impl == "pallas" and pallas_block:
    return lambda q, k, v: D.dispatch(FAMILY, impl, q, k, v, mask=mask, block_q=pallas_block, block_k=pallas_block)
  return lambda q, k, v: softmax_attention(q, k, v, mask=mask, impl=impl)


def _programs(fn, ct):
  fwd = jax.jit(fn)

  def loss(q, k, v):
    return jnp.sum(fn(q, k, v).astype(jnp.float32) * ct)

  return fwd, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _dtype_and_budget(dtype: str, max_memory_mb: float | None):
  """The benchmark's dtype ("auto": bf16 on GPU/TPU, fp32 on CPU) and its memory budget in MiB."""
  if dtype == "auto":
    dtype = "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"
  return jnp.dtype(dtype), default_max_memory_mb() if max_memory_mb is None else max_memory_mb


def _time_into(row: dict, fn, ct, args, repeats: int, max_mb: float) -> None:
  """Times fn's fwd and fwd+bwd programs on args into row; an impl or peer that cannot
  lower this case gets a "failed: ..." note instead (the bench keeps going)."""
  try:
    row.update(measure(*_programs(fn, ct), args, repeats, max_mb))
  except Exception as e:  # noqa: BLE001  (report, keep going)
    row["note"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"


def _add_tflops(row: dict, flops) -> None:
  """Achieved TFLOP/s of the unmasked work, fwd and fwd+bwd, where the row was timed."""
  for name, f in zip(("fwd", "fwdbwd"), flops):
    ms = row.get(f"{name}_ms")
    row[f"{name}_tflops"] = f / (ms * 1e-3) / 1e12 if ms else None


def run_kernel_bench(seqs: Sequence[int], *, batch: int = 1, heads: int = 16, kv_heads: int | None = None,
                     head_dim: int = 128, dtype: str = "auto", patterns: Sequence[str] = PATTERNS,
                     impls: Sequence[str] = IMPLS, window: int = 1024, density: float = 0.1, repeats: int = 5,
                     max_memory_mb: float | None = None, pallas_block: int | None = None,
                     log=print) -> list[dict[str, Any]]:
  """Times every impl on every (pattern, length); returns one dict per row (see the module docstring)."""
  kv_heads = kv_heads or heads
  dt, max_mb = _dtype_and_budget(dtype, max_memory_mb)
  rows = []
  for seq in seqs:
    keys = jax.random.split(jax.random.PRNGKey(seq), 4)
    q = jax.random.normal(keys[0], (batch, seq, heads, head_dim), dt)
    k = jax.random.normal(keys[1], (batch, seq, kv_heads, head_dim), dt)
    v = jax.random.normal(keys[2], (batch, seq, kv_heads, head_dim), dt)
    ct = jax.random.normal(keys[3], (batch, seq, heads, head_dim), jnp.float32)
    for pattern in patterns:
      mask = pattern_mask(pattern, seq, window, density)
      flops = unmasked_flops(pattern, seq, batch, heads, head_dim, window, density)
      for impl in impls:
        if impl in ATTNLAB_IMPLS:
          fn = _attnlab_fn(impl, q, k, v, mask, pallas_block)
        else:
          fn = _peer_fn(impl, pattern, seq, window, density)
        row: dict[str, Any] = {"pattern": pattern, "impl": impl, "seq": seq, "batch": batch, "heads": heads,
                               "kv_heads": kv_heads, "head_dim": head_dim, "dtype": dtype,
                               "density": allowed_pairs(pattern, seq, window, density) / seq ** 2}
        if isinstance(fn, str):
          row["note"] = fn
        else:
          _time_into(row, fn, ct, (q, k, v), repeats, max_mb)
        _add_tflops(row, flops)
        rows.append(row)
        log(_fmt_row(row))
  _add_ratios(rows)
  return rows


# ---- --family linear: the chunked linear attention kernel -----------------------------------


def linear_flops(seq, batch, heads, head_dim, chunk) -> tuple[float, float]:
  """(forward, forward+backward) FLOPs of the chunk form at Dk = Dv = head_dim (module docstring)."""
  fwd = float(batch * heads * seq) * (4.0 * head_dim * head_dim + 4.0 * chunk * head_dim)
  return fwd, 3.0 * fwd


def _linear_inputs(pattern, q, log_decay_key):
  """log decay for the pattern: None, [H], [B, T, H] or [B, T, H, D] (log-sigmoid, <= 0)."""
  b, t, h, d = q.shape
  if pattern == "none":
    return None
  if pattern == "head":
    return jnp.log1p(-2.0 ** (-5.0 - jnp.arange(h, dtype=jnp.float32)))  # RetNet's 1 - 2^(-5-h)
  shape = (b, t, h) if pattern == "token" else (b, t, h, d)
  return jax.nn.log_sigmoid(jax.random.normal(log_decay_key, shape, jnp.float32) + 3.0) / 4.0


def _linear_attnlab_fn(impl, q, k, v, log_decay, chunk):
  """The attnlab op for the decay through the dispatch table, or a reason string."""
  gla = log_decay is not None and log_decay.ndim == 4
  family, extra = ("linear.gla", (log_decay,)) if gla else ("linear", ())
  kw = dict(scale=q.shape[-1] ** -0.5, chunk_size=chunk, **({} if gla else {"log_decay": log_decay}))
  try:
    D.resolve(family, impl, q, k, v, *extra, **kw)
  except ValueError as e:
    reason = str(e)
    return f"needs GPU (backend is {jax.default_backend()}; interpret mode is for tests)" if \
        "GPU backend" in reason else reason
  pick = (lambda out: out[0]) if gla else (lambda out: out)  # gla returns (o, final state)
  return lambda q, k, v: pick(D.dispatch(family, impl, q, k, v, *extra, **kw))


def _fla_times(pattern, q, k, v, log_decay, ct, repeats):
  """fla's chunk kernel (PyTorch) timed forward and forward+backward, or {"note": why not}."""
  try:
    import torch  # noqa: PLC0415  (optional GPU peer)
    from fla.ops.gla import chunk_gla  # noqa: PLC0415
    from fla.ops.simple_gla import chunk_simple_gla  # noqa: PLC0415
  except ImportError as e:
    return {"note": f"fla is not installed ({e.name})"}
  if not torch.cuda.is_available() or jax.default_backend() != "gpu":
    return {"note": "fla needs a GPU"}
  to = lambda x, grad=True: torch.from_numpy(np.asarray(x, np.float32)).cuda().to(  # noqa: E731
      torch.bfloat16 if q.dtype == jnp.bfloat16 else torch.float32).requires_grad_(grad)
  tq, tk, tv, tct = to(q), to(k), to(v), to(ct, False)
  g = None
  if log_decay is not None:
    g = to(jnp.broadcast_to(log_decay, q.shape[:3]) if log_decay.ndim == 1 else log_decay).float()
  fn = chunk_gla if pattern == "diag" else chunk_simple_gla
  run = lambda: fn(tq, tk, tv, g=g, scale=q.shape[-1] ** -0.5)[0]  # noqa: E731  ([B, T, H, D] layout)

  def fwdbwd():
    (run().float() * tct).sum().backward()

  sync = lambda _: torch.cuda.synchronize()  # noqa: E731
  try:
    with torch.no_grad():
      fwd_ms = median_ms(run, repeats, sync=sync)
    return {"fwd_ms": fwd_ms, "fwdbwd_ms": median_ms(fwdbwd, repeats, sync=sync)}
  except Exception as e:  # an fla version whose API differs: report, keep going
    return {"note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}


def run_linear_bench(seqs: Sequence[int], *, batch: int = 1, heads: int = 16, head_dim: int = 128,
                     dtype: str = "auto", patterns: Sequence[str] = LINEAR_PATTERNS,
                     impls: Sequence[str] = LINEAR_IMPLS, chunk: int = 64, repeats: int = 5,
                     max_memory_mb: float | None = None, log=print) -> list[dict[str, Any]]:
  """Times the linear family's impls (and fla) per (decay, length); rows as `run_kernel_bench`."""
  dt, max_mb = _dtype_and_budget(dtype, max_memory_mb)
  rows = []
  for seq in seqs:
    keys = jax.random.split(jax.random.PRNGKey(seq), 5)
    q, k, v = (jax.random.normal(kk, (batch, seq, heads, head_dim), dt) / 4.0 for kk in keys[:3])
    ct = jax.random.normal(keys[3], (batch, seq, heads, head_dim), jnp.float32)
    flops = linear_flops(seq, batch, heads, head_dim, chunk)
    for pattern in patterns:
      log_decay = _linear_inputs(pattern, q, keys[4])
      for impl in impls:
        row: dict[str, Any] = {"family": "linear", "pattern": pattern, "impl": impl, "seq": seq, "batch": batch,
                               "heads": heads, "kv_heads": heads, "head_dim": head_dim, "dtype": dtype,
                               "chunk": chunk}
        if impl == "fla":
          row.update(_fla_times(pattern, q, k, v, log_decay, ct, repeats))
        else:
          fn = _linear_attnlab_fn(impl, q, k, v, log_decay, chunk)
          if isinstance(fn, str):
            row["note"] = fn
          else:
            _time_into(row, fn, ct, (q, k, v), repeats, max_mb)
        _add_tflops(row, flops)
        rows.append(row)
        log(_fmt_row(row))
  for r in rows:
    for name in ("fwd", "fwdbwd"):
      peer = next((p.get(f"{name}_ms") for p in rows if (p["seq"], p["pattern"], p["impl"]) ==
                   (r["seq"], r["pattern"], "fla")), None)
      ms = r.get(f"{name}_ms")
      r[f"{name}_vs_peer"], r[f"{name}_vs_dense"] = (ms / peer if ms and peer else None), None
  return rows


def _add_ratios(rows):
  """vs_peer (same pattern and length) and vs_dense (the peer on `full`) for fwd and fwd+bwd."""
  def best(seq, pattern, name):
    for peer in PEERS:
      for r in rows:
        if (r["seq"], r["pattern"], r["impl"]) == (seq, pattern, peer) and r.get(f"{name}_ms"):
          return r[f"{name}_ms"]
    return None

  for r in rows:
    for name in ("fwd", "fwdbwd"):
      ms, peer, dense = r.get(f"{name}_ms"), best(r["seq"], r["pattern"], name), best(r["seq"], "full", name)
      r[f"{name}_vs_peer"] = ms / peer if ms and peer else None
      r[f"{name}_vs_dense"] = ms / dense if ms and dense else None


def _num(x, digits=2):
  return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


HEADER = ("pattern", "impl", "T", "fwd ms", "f+b ms", "fwd TF/s", "f+b TF/s", "fwd/peer", "f+b/peer",
          "f+b/dense", "note")


def _cells(r):
  return (r["pattern"], r["impl"], str(r["seq"]), _num(r.get("fwd_ms")), _num(r.get("fwdbwd_ms")),
          _num(r.get("fwd_tflops"), 3), _num(r.get("fwdbwd_tflops"), 3), _num(r.get("fwd_vs_peer")),
          _num(r.get("fwdbwd_vs_peer")), _num(r.get("fwdbwd_vs_dense")), r.get("note", ""))


def _fmt_row(r) -> str:
  return "  ".join(f"{h}={c}" for h, c in zip(HEADER, _cells(r)) if c)


def print_table(rows, console=None) -> None:
  """A rich table of the rows (ratios: time / baseline time; below 1 = faster)."""
  from rich.console import Console
  from rich.table import Table
  console = console or Console(width=max(160, Console().width))
  table = Table(title="kernel benchmark (ms; TFLOP/s of unmasked work; ratio = time / peer time)")
  for h in HEADER:
    table.add_column(h, justify="left" if h in ("pattern", "impl", "note") else "right", overflow="fold")
  for r in sorted(rows, key=lambda r: (r["seq"], PATTERNS.index(r["pattern"]) if r["pattern"] in PATTERNS else 9)):
    table.add_row(*_cells(r))
  console.print(table)


def environment() -> dict[str, Any]:
  """What the numbers were measured on."""
  return {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
          "machine": platform.machine()}


def _csv(kind):
  return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The `bench kernels` options."""
  p.add_argument("--family", choices=("softmax", "linear"), default="softmax",
                 help="softmax: the block-sparse flash kernel; linear: the chunked linear attention kernel")
  p.add_argument("--seq", type=_csv(int), default=[512, 1024], help="comma list of sequence lengths")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=16)
  p.add_argument("--kv-heads", type=int, default=None, help="kv heads (GQA; default = --heads)")
  p.add_argument("--head-dim", type=int, default=128)
  p.add_argument("--dtype", default="auto", help="bfloat16 | float16 | float32 | auto (bf16 on GPU/TPU, else f32)")
  p.add_argument("--patterns", type=_csv(str), default=None,
                 help=f"comma list of {', '.join(PATTERNS)} (linear: {', '.join(LINEAR_PATTERNS)}); default all")
  p.add_argument("--impls", type=_csv(str), default=None,
                 help=f"comma list of {', '.join(IMPLS)} (linear: {', '.join(LINEAR_IMPLS)}); default all")
  p.add_argument("--chunk", type=int, default=64, help="--family linear: the chunk size")
  p.add_argument("--window", type=int, default=1024, help="keys per query of the `window` pattern")
  p.add_argument("--density", type=float, default=0.1, help="fraction of the score matrix the `band` pattern keeps")
  p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
  p.add_argument("--pallas-block", type=int, default=None, help="the Pallas kernel's tile edge (default: its own)")
  p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
  p.add_argument("--max-memory-gb", type=float, default=None,
                 help="do not run programs whose compiled peak exceeds this (default 60%% of RAM)")
  p.add_argument("--json", default=None, help="also write {environment, rows} to this file")


def main(args) -> int:
  """Runs `bench kernels` from parsed arguments; prints the table (exit 2 on a bad option)."""
  import sys
  linear = args.family == "linear"
  patterns = args.patterns or list(LINEAR_PATTERNS if linear else PATTERNS)
  impls = args.impls or list(LINEAR_IMPLS if linear else IMPLS)
  bad = ([x for x in patterns if x not in (LINEAR_PATTERNS if linear else PATTERNS)]
         + [x for x in impls if x not in (LINEAR_IMPLS if linear else IMPLS)])
  if bad or min(args.seq + [args.batch, args.heads, args.head_dim, args.repeats, args.chunk]) <= 0:
    print(f"attnlab: error: unknown pattern/impl {bad} or a non-positive size", file=sys.stderr)
    return 2
  max_mb = None if args.max_memory_gb is None else args.max_memory_gb * 1024
  with use_clock(args.clock):
    if linear:
      rows = run_linear_bench(args.seq, batch=args.batch, heads=args.heads, head_dim=args.head_dim,
                              dtype=args.dtype, patterns=patterns, impls=impls, chunk=args.chunk,
                              repeats=args.repeats, max_memory_mb=max_mb)
    else:
      rows = run_kernel_bench(args.seq, batch=args.batch, heads=args.heads, kv_heads=args.kv_heads,
                              head_dim=args.head_dim, dtype=args.dtype, patterns=patterns, impls=impls,
                              window=args.window, density=args.density, repeats=args.repeats,
                              pallas_block=args.pallas_block, max_memory_mb=max_mb)
  print_table(rows)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"environment": {**environment(), "clock": args.clock}, "rows": rows}, f, indent=1, default=float)
  return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `kernels` to a `bench` subparsers object; sets `func` to `main`."""
  p = subparsers.add_parser("kernels", help="attention kernels (softmax or linear; attnlab impls and peers) side by side",
                            description=__doc__.splitlines()[0])
  add_arguments(p)
  p.set_defaults(func=main)
  return p


if __name__ == "__main__":  # `python -m attnlab.bench.kernels ...` (no CLI dependencies)
  import sys
  _parser = argparse.ArgumentParser(prog="attnlab bench kernels", description=__doc__.splitlines()[0])
  add_arguments(_parser)
  sys.exit(main(_parser.parse_args()))
