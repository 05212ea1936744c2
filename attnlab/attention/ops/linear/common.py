"""Shared pieces of the linear family (linear, decay and gated recurrences).

Every op here has three forms of the same map, chosen by `form` (a separate argument
from `impl`): "chunked" (chunks through `lax.scan`, O(T) memory), "parallel" (the
materialised [T, T] form) and "recurrent" (token by token, the decode form). The form
dispatchers are each op's "xla" implementation; its "reference" is the parallel form
(`reference_impl`), whatever `form` says (form chooses among the xla algorithms).
Time-axis chunking helpers (`pad_time`, `to_chunks`, `from_chunks`, `scan_chunks`) live here too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FORMS = ("chunked", "parallel", "recurrent")


def check_form(form: str, causal: bool = True) -> None:
  """ValueError unless `form` is one of FORMS (and "recurrent" only with causal=True)."""
  if form not in FORMS:
    raise ValueError(f"form must be one of {FORMS}, got {form!r}")
  if form == "recurrent" and not causal:
    raise ValueError("the recurrent form is causal; use form='chunked' or 'parallel' for causal=False")


def reference_impl(parallel_fn, *tiling: str):
  """The "reference" implementation of a form-dispatched op: `parallel_fn` (its
  materialised form) on the op's arguments without `form` and the chunked form's tiling
  arguments `tiling` (chunk sizes). `form` is still checked (see `check_form`)."""

  def reference(*args, form: str = "chunked", **kwargs):
    check_form(form, kwargs.get("causal", True))
    for name in tiling:
      kwargs.pop(name, None)
    return parallel_fn(*args, **kwargs)

  reference.__doc__ = f"`{parallel_fn.__name__}` (the materialised form) as the reference impl."
  return reference


def pad_time(x, multiple: int):
  """Pads axis 1 of x [B, T, ...] with zeros up to a multiple of `multiple`."""
  t = x.shape[1]
  pad = -t % multiple
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[1] = (0, pad)
  return jnp.pad(x, widths)


def to_chunks(x, chunk: int):
  """[B, T, ...] (T a multiple of chunk) -> [T/chunk, B, chunk, ...] (scan-major)."""
  b, t = x.shape[:2]
  return jnp.moveaxis(x.reshape(b, t // chunk, chunk, *x.shape[2:]), 1, 0)


def from_chunks(x, length: int):
  """[N, B, chunk, ...] -> [B, length, ...] (drops padding)."""
  n, b, c = x.shape[:3]
  return jnp.moveaxis(x, 0, 1).reshape(b, n * c, *x.shape[3:])[:, :length]


def scan_chunks(body, init, xs, length: int, checkpoint: bool = True):
  """`lax.scan(body, init, xs)` over chunk-major inputs (see `to_chunks`), the body
  rematerialised in the backward pass when `checkpoint`; returns (the per-chunk outputs
  merged back to [B, length, ...] by `from_chunks`, the final carry)."""
  if checkpoint:
    body = jax.checkpoint(body)
  carry, out = jax.lax.scan(body, init, xs)
  return from_chunks(out, length), carry
