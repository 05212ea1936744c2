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
