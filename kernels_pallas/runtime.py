"""Where the Pallas kernels may run: backend checks and the interpret-mode switch.

Pallas kernels compile for GPU (Triton) here; on a CPU they run only in interpret mode
(`pallas_call(..., interpret=True)`: every grid step executed as ordinary JAX ops), which
is slow and meant for tests. Interpret mode is requested by

  * an explicit `interpret=True` argument to a kernel function, or
  * the environment variable ATTNLAB_PALLAS_INTERPRET=1, or
  * the context manager `interpret_mode()` (tests use this for the dispatch path).

`interpret_enabled()` is what the dispatch path consults; `unsupported_backend()` says why
a compiled kernel cannot run on this process's default backend.
"""

from __future__ import annotations

import contextlib
import os
import threading

import jax

ENV_VAR = "ATTNLAB_PALLAS_INTERPRET"
_STATE = threading.local()


def interpret_enabled() -> bool:
  """True when interpret mode is switched on (context manager or ATTNLAB_PALLAS_INTERPRET=1)."""
  forced = getattr(_STATE, "forced", None)
  if forced is not None:
    return forced
  return os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def interpret_mode(enabled: bool = True):
  """Within the block, kernels reached through dispatch run (or not) in interpret mode."""
  previous = getattr(_STATE, "forced", None)
  _STATE.forced = enabled
  try:
    yield
  finally:
    _STATE.forced = previous


def unsupported_backend() -> str | None:
  """None where the compiled kernels can run (a GPU backend, or interpret mode), else why not."""
  if interpret_enabled():
    return None
  backend = jax.default_backend()
  if backend == "gpu":
    return None
  if backend == "tpu":
    return ("the pallas block-sparse kernel's TPU (Mosaic) form is tested in interpret mode only, so dispatch "
            "does not pick it yet (call kernels_pallas.block_sparse_flash.block_sparse_flash_attention("
            "backend='tpu')); use impl='xla'")
  return (f"pallas kernels need a GPU backend (backend is {backend}; interpret mode only under "
          f"{ENV_VAR}=1 or kernels_pallas.runtime.interpret_mode())")


__all__ = ["ENV_VAR", "interpret_enabled", "interpret_mode", "unsupported_backend"]
