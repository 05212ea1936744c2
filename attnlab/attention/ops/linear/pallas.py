"""The linear family's "pallas" implementations: `kernels_pallas.chunked_linear` behind the
ops "linear" (`linear_attention`: no decay, per-head or per-token scalar decay, GLA-style
per-channel decay, the Katharopoulos normaliser) and "linear.gla" (`gla_attention`, with
its initial and final state).

The kernel is the chunked form: `form="parallel"` / `"recurrent"` and `causal=False` are
named as unsupported (they stay on impl="xla"), so "auto" keeps the caller's form. The
chunk size is the op's `chunk_size`; GLA's `sub_chunk` tiles only the XLA form (the kernel
computes the diagonal blocks exactly) and, as for the reference, does not apply.

Backend: compiled for GPU (Triton); on CPU only in interpret mode (ATTNLAB_PALLAS_INTERPRET=1
or `kernels_pallas.runtime.interpret_mode()`), otherwise the reason names the backend, so
"auto" never picks the kernel on CPU. Its TPU form is tested in interpret mode only, so on a
TPU the reason says so and "auto" keeps impl="xla".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops.linear.core import DEFAULT_CHUNK
from kernels_pallas import chunked_linear as K
from kernels_pallas import runtime

PRIORITY = 1  # above xla (0): "auto" takes the kernel wherever it can run


def _backend_reason(form: str, causal: bool = True) -> str | None:
  if not runtime.interpret_enabled() and jax.default_backend() == "tpu":
    return ("the chunked linear kernel's TPU (Mosaic) form is tested in interpret mode only, so dispatch does not "
            "pick it yet (call kernels_pallas.chunked_linear.chunked_linear_attention(backend='tpu')); use impl='xla'")
  reason = runtime.unsupported_backend()
  if reason:
    return reason
  if form != "chunked":
    return f"the pallas kernel is the chunked form; form={form!r} runs on impl='xla'"
  if not causal:
    return "the pallas kernel is causal; causal=False (the global form) runs on impl='xla'"
  return None


def linear_pallas_unsupported_reason(q, k, v, *, form="chunked", log_decay=None, causal=True, normalize=False,
                                     chunk_size=DEFAULT_CHUNK, **_) -> str | None:
  """None if `linear_attention_pallas` can run these arguments, else a one-line reason."""
  reason = _backend_reason(form, causal)
  if reason:
    return reason
  v_eff = jax.ShapeDtypeStruct(v.shape[:-1] + (v.shape[-1] + int(normalize),), v.dtype)  # + the ones column
  return K.unsupported_reason(q, k, v_eff, log_decay=log_decay, chunk_size=chunk_size,
                              interpret=runtime.interpret_enabled())


def linear_attention_pallas(q, k, v, *, form="chunked", log_decay=None, causal=True, normalize=False, scale=1.0,
                            eps=1e-6, chunk_size=DEFAULT_CHUNK):
  """Op "linear" through the chunked Pallas kernel; arguments and result as
  `linear_attention_parallel` (q [B, T, H, Dk], k [B, T, Hkv, Dk], v [B, T, Hkv, Dv],
  log_decay None | [H] | [B, T, H] | [B, T, H, Dk] -> [B, T, H, Dv] in q's dtype).
  normalize: the denominator q_t z_t is the kernel's output on a ones column appended to v."""
  reason = linear_pallas_unsupported_reason(q, k, v, form=form, log_decay=log_decay, causal=causal,
                                            normalize=normalize, chunk_size=chunk_size)
  if reason:
    raise ValueError(reason)
  if normalize:
    v = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)
  out, _ = K.chunked_linear_attention(q, k, v, log_decay=log_decay, scale=scale, chunk_size=chunk_size)
  if normalize:
    out = out[..., :-1].astype(jnp.float32) / (out[..., -1:].astype(jnp.float32) + eps)
  return out.astype(q.dtype)


def gla_pallas_unsupported_reason(q, k, v, g, *, form="chunked", initial_state=None, chunk_size=64, **_):
  """None if `gla_attention_pallas` can run these arguments, else a one-line reason."""
  reason = _backend_reason(form) or K.unsupported_reason(q, k, v, log_decay=g, chunk_size=chunk_size,
                                                         interpret=runtime.interpret_enabled())
  if reason:
    return reason
  if g.shape != q.shape:
    return f"GLA gates must be [B, T, H, Dk] = {q.shape}, got {g.shape}"
  want = (q.shape[0], q.shape[2], q.shape[3], v.shape[3])
  if initial_state is not None and tuple(initial_state.shape) != want:
    return f"initial_state must be [B, H, Dk, Dv] = {want}, got {tuple(initial_state.shape)}"
  return None


def gla_attention_pallas(q, k, v, g, *, form="chunked", scale=None, initial_state=None, chunk_size=64,
                         sub_chunk=16):
  """Op "linear.gla" through the chunked Pallas kernel: q, k, g [B, T, H, Dk], v [B, T, H, Dv],
  initial_state [B, H, Dk, Dv] or None -> (o [B, T, H, Dv] fp32 as the XLA forms, final_state
  [B, H, Dk, Dv] fp32). scale defaults to Dk ** -0.5; sub_chunk: see the module docstring."""
  del sub_chunk
  reason = gla_pallas_unsupported_reason(q, k, v, g, form=form, initial_state=initial_state, chunk_size=chunk_size)
  if reason:
    raise ValueError(reason)
  out, state = K.chunked_linear_attention(q, k, v, log_decay=g, scale=scale, initial_state=initial_state,
                                          chunk_size=chunk_size)
  return out.astype(jnp.float32), state


__all__ = ["PRIORITY", "gla_attention_pallas", "gla_pallas_unsupported_reason", "linear_attention_pallas",
           "linear_pallas_unsupported_reason"]
