"""softmax_attention: the softmax family's entry point, dispatched through `ops.dispatch`.

impl (registered in `ops/softmax/__init__.py`):
  "reference"  fp32, materialises the scores (the oracle; reference.py)
  "xla"        blocked online softmax in pure JAX, skips masked-out tiles (blocked.py)
  "cudnn"      cuDNN flash attention via jax.nn.dot_product_attention (GPU; cudnn.py)
  "pallas"     kernels_pallas' block-sparse flash kernel (GPU; CPU in interpret mode only; pallas.py)
  "auto"       cudnn where it can run these arguments, else pallas, else xla (reasons logged once)
"""

from __future__ import annotations

from attnlab.attention.ops import dispatch as D

FAMILY = "softmax"


def resolve_impl(q, k, v, *, mask=None, bias=None, q_offset=0, impl="auto") -> str:
  """The concrete implementation `softmax_attention` would run for these arguments."""
  return D.resolve(FAMILY, impl, q, k, v, mask=mask, bias=bias, q_offset=q_offset)


def softmax_attention(q, k, v, *, mask=None, bias=None, scale=None, impl="auto", q_offset=0):
  """softmax(q k^T * scale + bias, masked) v with a selectable implementation.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] (GQA/MQA when Hq % Hkv == 0)
  -> [B, Tq, Hq, Dv]. mask: `masks.Mask` or None (query i sits at absolute position
  q_offset + i; q_offset may be traced in decode steps). bias: None, an array
  broadcastable to [B, Hq, Tq, Tk], or a callable `bias(q_pos, k_pos)` (positional.AlibiBias).
  scale defaults to D ** -0.5. A fully masked query row outputs zeros. See the module
  docstring for `impl`; an unknown impl or a combination an impl cannot do is a ValueError.
  """
  return D.dispatch(FAMILY, impl, q, k, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset)
