"""Reference points for attention benchmarks: jax.nn.dot_product_attention and PyTorch SDPA.

Both get the same shapes as attnlab's ops: q, k, v [B, T, H, D] fp32, causal and/or a
sliding window of `window` keys, the query's own included (`window_extents`: causal t-w+1..t,
non-causal centred).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.bench.timing import measure, median_ms

from attnlab.attention.variants.base import window_extents


def _grad_sum(fn):
  return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2))


def jax_dpa(q, k, v, *, causal: bool, window: int | None, repeats: int,
            max_mb: float = float("inf")) -> dict[str, Any]:
  """Times jax.nn.dot_product_attention (implementation=None) forward and forward+backward
  (see `timing.measure`; programs over `max_mb` MiB are not run)."""
  local = None if window is None else window_extents(window, causal)
  fn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, local_window_size=local)
  return measure(jax.jit(fn), jax.jit(_grad_sum(fn)), (q, k, v), repeats, max_mb)


def torch_available() -> str | None:
  """The torch version string, or None when `import torch` fails."""
  try:
    import torch  # noqa: F401
  except Exception:
    return None
  return torch.__version__


def torch_sdpa(q, k, v, *, causal: bool, window: int | None, repeats: int) -> dict[str, Any]:
  """Times torch.nn.functional.scaled_dot_product_attention on CPU, same shapes.

  A window becomes a boolean attn_mask [T, T] (True = attend), as SDPA has no window flag.
  """
  import torch
  import torch.nn.functional as F
  to_t = lambda x: torch.from_numpy(np.array(x)).permute(0, 2, 1, 3).contiguous()  # [B, H, T, D]
  tq, tk, tv = to_t(q), to_t(k), to_t(v)
  t = tq.shape[2]
  mask = None
  if window is not None:
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    left, right = window_extents(window, causal)
    mask = (j >= i - left) & (j <= i + right)
  call = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask, is_causal=causal and mask is None)
  with torch.no_grad():
    fwd_ms = median_ms(lambda: call(tq, tk, tv), repeats, sync=lambda x: x)
  leaves = [x.clone().requires_grad_(True) for x in (tq, tk, tv)]

  def fwdbwd():
    for x in leaves:
      x.grad = None
    call(*leaves).sum().backward()
    return None

  return {"fwd_ms": fwd_ms, "fwdbwd_ms": median_ms(fwdbwd, repeats, sync=lambda x: x)}
