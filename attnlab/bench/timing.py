"""Wall-clock and compiled-memory measurement of jitted functions."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from typing import Any, Callable

import jax

MIB = 2.0 ** 20

# "wall": elapsed time; "cpu": CPU time of this process, all threads (steadier than wall time
# on a machine shared with other jobs, and it counts work on every core a program uses).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = ["wall"]


@contextlib.contextmanager
def use_clock(name: str):
  """Within the block, `median_ms` reads the clock `name` ("wall" or "cpu")."""
  if name not in CLOCKS:
    raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {name!r}")
  old, _clock[0] = _clock[0], name
  try:
    yield
  finally:
    _clock[0] = old


def median_ms(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
              sync: Callable[[Any], Any] = jax.block_until_ready) -> float:
  """Median time of `fn()` in milliseconds over `repeats` runs after `warmup` runs, on the
  clock chosen with `use_clock` (wall time by default).

  `sync` waits for the result (jax.block_until_ready; identity for eager torch).
  """
  clock = CLOCKS[_clock[0]]
  for _ in range(max(warmup, 0)):
    sync(fn())
  times = []
  for _ in range(max(repeats, 1)):
    start = clock()
    sync(fn())
    times.append(clock() - start)
  return statistics.median(times) * 1e3


def memory_mb(compiled) -> dict[str, float]:
  """Memory of a compiled program (`jax.jit(f).lower(...).compile()`) from XLA's
  memory_analysis, in MiB: {"temp_mb": scratch buffers, "peak_mb": arguments + outputs +
  temp - aliased}; NaN when the backend reports nothing."""
  try:
    ma = compiled.memory_analysis()
  except Exception:  # some backends have no memory analysis
    ma = None
  if ma is None:
    return {"temp_mb": math.nan, "peak_mb": math.nan}
  peak = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes - ma.alias_size_in_bytes
  return {"temp_mb": ma.temp_size_in_bytes / MIB, "peak_mb": peak / MIB}


def measure(fwd, fwdbwd, args, repeats: int, max_mb: float = math.inf) -> dict[str, Any]:
  """Compiled memory, then median times, of a jitted forward and forward+backward on `args`.

  Each program is compiled once; memory is read first, and a program whose peak exceeds
  `max_mb` MiB is not run (its time stays absent; `note` says what it would need), so one
  quadratic variant at a long length cannot take the machine down.
  Returns {fwd_ms, fwdbwd_ms, fwd_temp_mb, fwd_peak_mb, fwdbwd_temp_mb, fwdbwd_peak_mb[, note]}.
  """
  row: dict[str, Any] = {}
  too_big = []
  for name, f in (("fwd", fwd), ("fwdbwd", fwdbwd)):
    compiled = f.lower(*args).compile()
    for key, val in memory_mb(compiled).items():
      row[f"{name}_{key}"] = val
    if row[f"{name}_peak_mb"] > max_mb:
      too_big.append(f"{name} needs {row[f'{name}_peak_mb'] / 1024:.2f} GiB")
    else:
      row[f"{name}_ms"] = median_ms(lambda: compiled(*args), repeats)
  if too_big:
    row["note"] = f"not run: {', '.join(too_big)} > --max-memory-gb {max_mb / 1024:.2f}"
  return row


def default_max_memory_mb(fraction: float = 0.6) -> float:
  """`fraction` of this machine's physical memory in MiB (inf where unknown)."""
  try:
    return fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB
  except (ValueError, OSError, AttributeError):
    return math.inf
