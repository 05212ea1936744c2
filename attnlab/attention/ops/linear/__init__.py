"""The linear family: linear attention and its decay / gated / EMA relatives.

  core.py          linear attention with optional decay (family "linear"), the core of
                   the linear and decay variants
  feature_maps.py  phi for linear attention (elu+1, FAVOR+, Taylor, cosFormer)
  gla.py           gated linear attention ("linear.gla")
  delta_rule.py    DeltaNet's delta rule ("linear.delta_rule")
  mala.py          magnitude-aware linear attention ("linear.mala")
  mega_ema.py      Mega's multi-dimensional damped EMA ("linear.ema")
  common.py        FORMS / check_form, the reference builder, time-axis chunking
  pallas.py        impl="pallas" of "linear" and "linear.gla": kernels_pallas.chunked_linear

Each op's `form` (chunked / parallel / recurrent) is its own argument. Importing this
package registers, per op, "xla" (the form dispatcher) and "reference" (the materialised
parallel form, priority -1) in `ops.dispatch`, and "pallas" (the chunked Pallas kernel,
priority 1: GPU, or CPU in interpret mode) for "linear" and "linear.gla".
"""

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.linear import core, delta_rule, gla, mala, mega_ema
from attnlab.attention.ops.linear.common import FORMS, check_form, reference_impl
from attnlab.attention.ops.linear.core import linear_attention
from attnlab.attention.ops.linear.delta_rule import delta_rule_attention
from attnlab.attention.ops.linear.gla import gla_attention
from attnlab.attention.ops.linear.mala import mala_attention
from attnlab.attention.ops.linear.mega_ema import ema

for _module, _parallel, _xla, _tiling in (
    (core, core.linear_attention_parallel, core.linear_attention_xla, ("chunk_size",)),
    (gla, gla.gla_parallel, gla.gla_attention_xla, ("chunk_size", "sub_chunk")),
    (delta_rule, delta_rule.delta_rule_parallel, delta_rule.delta_rule_attention_xla, ("chunk_size",)),
    (mala, mala.mala_parallel, mala.mala_attention_xla, ("chunk_size",)),
    (mega_ema, mega_ema.ema_parallel, mega_ema.ema_xla, ("chunk_size",))):
  D.register_impl(_module.FAMILY, "reference", reference_impl(_parallel, *_tiling), priority=-1)
  D.register_impl(_module.FAMILY, "xla", _xla)
del _module, _parallel, _xla, _tiling

from attnlab.attention.ops.linear import pallas as _pallas  # noqa: E402  (imports kernels_pallas)

D.register_impl(core.FAMILY, "pallas", _pallas.linear_attention_pallas,
                unsupported=_pallas.linear_pallas_unsupported_reason, priority=_pallas.PRIORITY)
D.register_impl(gla.FAMILY, "pallas", _pallas.gla_attention_pallas,
                unsupported=_pallas.gla_pallas_unsupported_reason, priority=_pallas.PRIORITY)

__all__ = ["FORMS", "check_form", "delta_rule_attention", "ema", "gla_attention", "linear_attention",
           "mala_attention"]
