"""Wall-clock and compiled-memory measurement of jitted functions."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import jax

MIB = 2.0 ** 20


def median_ms(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
              sync: Callable[[Any], Any] = jax.block_until_ready) -> float:
  """Median wall time of `fn()` in milliseconds over `repeats` runs after `warmup` runs.

  `sync` waits for the result (jax.block_until_ready; identity for eager torch).
  """
  for _ in range(max(warmup, 0)):
    sync(fn())
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def compiled_memory_mb(jitted, *args) -> dict[str, float]:
  """Compiled memory of `jitted(*args)` from XLA's memory_analysis, in MiB.

  Returns {"temp_mb": scratch buffers, "peak_mb": arguments + outputs + temp - aliased};
  NaN when the backend reports nothing.
  """
  try:
    ma = jitted.lower(*args).compile().memory_analysis()
  except Exception:  # some backends have no memory analysis
    ma = None
  if ma is None:
    return {"temp_mb": math.nan, "peak_mb": math.nan}
  peak = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes - ma.alias_size_in_bytes
  return {"temp_mb": ma.temp_size_in_bytes / MIB, "peak_mb": peak / MIB}


def measure(fwd, fwdbwd, args, repeats: int, max_mb: float = math.inf) -> dict[str, Any]:
  """Compiled memory, then median times, of a jitted forward and forward+backward on `args`.

  Memory comes first, from the compiled programs; a program whose peak exceeds `max_mb`
  MiB is not run (its time stays absent) and `note` says what it would need, so one
  quadratic variant at a long length cannot take the machine down.
  Returns {fwd_ms, fwdbwd_ms, fwd_temp_mb, fwd_peak_mb, fwdbwd_temp_mb, fwdbwd_peak_mb[, note]}.
  """
  row: dict[str, Any] = {}
  for name, f in (("fwd", fwd), ("fwdbwd", fwdbwd)):
    for key, val in compiled_memory_mb(f, *args).items():
      row[f"{name}_{key}"] = val
  too_big = []
  for name, f in (("fwd", fwd), ("fwdbwd", fwdbwd)):
    peak = row[f"{name}_peak_mb"]
    if peak > max_mb:
      too_big.append(f"{name} needs {peak / 1024:.2f} GiB")
    else:
      row[f"{name}_ms"] = median_ms(lambda: f(*args), repeats)
  if too_big:
    row["note"] = f"not run: {', '.join(too_big)} > --max-memory-gb {max_mb / 1024:.2f}"
  return row


def default_max_memory_mb(fraction: float = 0.6) -> float:
  """`fraction` of this machine's physical memory in MiB (inf where unknown)."""
  try:
    import os
    return fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB
  except (ValueError, OSError, AttributeError):
    return math.inf
