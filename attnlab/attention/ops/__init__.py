"""Pure attention ops in the canonical layout q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D].

Laid out by family (as flash-linear-attention's `ops/<family>/`), each family's
reference and fast forms side by side and its shared pieces in its `common.py`:

  dispatch.py   the one table of implementations (impl = reference | xla | pallas | cudnn | auto)
  common.py     shape checks and helpers shared by every family
  softmax/      softmax attention (reference, blocked xla, cudnn) and softmax-like ops
  sparse/       static gathers, content-routed and score-selected sparse attention
  linear/       linear attention, feature maps, GLA, delta rule, MALA, Mega's EMA
  lowrank/      Linformer, Nystromformer

Importing this package imports every family, which registers its implementations.
"""

from attnlab.attention.ops import dispatch, linear, lowrank, softmax, sparse  # noqa: F401  (registration)
from attnlab.attention.ops.dispatch import IMPLS, families, implementations, register_impl, resolve
from attnlab.attention.ops.softmax.api import softmax_attention
from attnlab.attention.ops.softmax.reference import softmax_attention_reference

__all__ = ["IMPLS", "dispatch", "families", "implementations", "register_impl", "resolve", "softmax_attention",
           "softmax_attention_reference"]
