"""cuDNN flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`.

Only what cuDNN can express natively is translated: no mask, `Causal`, a causal
`SlidingWindow` (left window; a right window only when and-ed with `Causal`, which
cancels it), and `KeyPadding` (passed as a [B, 1, Tq, Tk] boolean mask), and-ed together.
Everything else (chunked, prefix-LM, segment ids, sinks, `|` combinations, callable
biases, traced or non-zero `q_offset`, fp32 inputs, CPU) raises a one-line ValueError;
`cudnn_unsupported_reason` lets `impl="auto"` test that without raising.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.common import check_qkv, default_scale

CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


@dataclasses.dataclass(frozen=True)
class CudnnMask:
  """A mask in cuDNN's terms: causal flag, left window (None = unbounded), key validity."""
  causal: bool = False
  left: int | None = None
  right: int | None = None
  kv_valid: tuple = ()  # KeyPadding arrays, and-ed


def _conjuncts(mask):
  """Flattens an `And` tree into its leaves."""
  if isinstance(mask, M.And):
    return _conjuncts(mask.a) + _conjuncts(mask.b)
  return [mask]


def translate_mask(mask) -> CudnnMask | str:
  """A `CudnnMask`, or a string saying why cuDNN cannot express `mask`."""
  out = CudnnMask()
  for m in ([] if mask is None else _conjuncts(mask)):
    if isinstance(m, M.Full):
      continue
    if isinstance(m, M.Causal):
      out = dataclasses.replace(out, causal=True)
    elif isinstance(m, M.SlidingWindow):
      left = m.left if out.left is None else min(out.left, m.left)
      right = m.right if out.right is None else min(out.right, m.right)
      out = dataclasses.replace(out, left=left, right=right)
    elif isinstance(m, M.KeyPadding):
      out = dataclasses.replace(out, kv_valid=out.kv_valid + (m.kv_valid,))
    else:
      return f"cudnn cannot express mask {type(m).__name__}"
  if out.left is not None and out.right and not out.causal:
    return "cudnn supports only left (causal) sliding windows"
  return out


def cudnn_unsupported_reason(q, k, v, *, mask=None, bias=None, q_offset=0, **_) -> str | None:
  """None if `softmax_attention_cudnn` can run these arguments, else a one-line reason.

  Other keyword arguments (scale, and those of ops built on softmax attention) do not
  matter to cuDNN and are ignored."""
  if jax.default_backend() != "gpu":
    return f"cudnn needs a GPU (backend is {jax.default_backend()})"
  if q.dtype not in CUDNN_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
    return f"cudnn needs bfloat16/float16 q, k, v (got {q.dtype}, {k.dtype}, {v.dtype})"
  if q.shape[-1] % 8 or q.shape[-1] > 256 or v.shape[-1] != q.shape[-1]:
    return f"cudnn needs head_dim a multiple of 8, <= 256 and equal for q and v (got {q.shape[-1]}, {v.shape[-1]})"
  if callable(bias):
    return "cudnn takes no callable bias (e.g. ALiBi); use impl='xla'"
  if not isinstance(q_offset, (int, np.integer)) or q_offset != 0:
    return "cudnn masks are aligned at position 0: q_offset must be the int 0 (not a decode step)"
  cm = translate_mask(mask)
  if isinstance(cm, str):
    return cm
  if (cm.causal or cm.left is not None) and q.shape[1] != k.shape[1]:
    return "cudnn causal/window masks need q_len == kv_len"
  return None


def _row_any(cm: CudnnMask, valid, tq: int):
  """bool [B, Tq]: whether query i has any allowed key (cuDNN would average a fully
  masked row; the attnlab contract is zeros). Prefix sums over key validity."""
  tk = valid.shape[1]
  csum = jnp.pad(jnp.cumsum(valid.astype(jnp.int32), axis=1), ((0, 0), (1, 0)))  # [B, Tk+1]
  i = jnp.arange(tq)
  hi = jnp.minimum(i, tk - 1) if cm.causal or cm.left is not None else jnp.full((tq,), tk - 1)
  lo = jnp.maximum(i - cm.left, 0) if cm.left is not None else jnp.zeros((tq,), jnp.int32)
  return (csum[:, hi + 1] - csum[:, lo]) > 0


def softmax_attention_cudnn(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0):
  """cuDNN softmax attention. q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] -> [B, Tq, Hq, D].

  bias: None or an array broadcastable to [B, Hq, Tq, Tk]. Raises ValueError for
  anything cuDNN cannot do (see `cudnn_unsupported_reason`).
  """
  bsz, tq, tk, _, _, d = check_qkv(q, k, v)
  reason = cudnn_unsupported_reason(q, k, v, mask=mask, bias=bias, q_offset=q_offset)
  if reason:
    raise ValueError(reason)
  cm = translate_mask(mask)
  valid = None
  for kv in cm.kv_valid:
    kv = jnp.broadcast_to(jnp.asarray(kv, bool), (bsz, tk))
    valid = kv if valid is None else valid & kv
  # cuDNN folds a mask into its bias input, which must span [.., Tq, Tk].
  dense_mask = None if valid is None else jnp.broadcast_to(valid[:, None, None, :], (bsz, 1, tq, tk))
  if bias is not None:
    bias = jnp.asarray(bias, q.dtype)
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
  window = None if cm.left is None else (cm.left, 0)
  out = jax.nn.dot_product_attention(
      q, k, v, bias=bias, mask=dense_mask, scale=default_scale(d, scale),
      is_causal=cm.causal or window is not None, local_window_size=window,
      implementation="cudnn")
  if valid is not None:
    out = out * _row_any(cm, valid, tq)[:, :, None, None].astype(out.dtype)
  return out
