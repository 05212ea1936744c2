"""The low-rank family: softmax attention through a compressed key set.

  linformer.py  Linformer's learned length projections (family "lowrank.linformer")
  nystrom.py    Nystromformer's landmarks and iterative pseudo-inverse ("lowrank.nystrom"),
                plus its depthwise value convolution

Importing this package registers each op's "xla" form and its materialised "reference"
(priority -1) in `ops.dispatch`. `from attnlab.attention.ops import lowrank as L` gives
every public function of both modules.
"""

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.lowrank import linformer, nystrom
from attnlab.attention.ops.lowrank.linformer import linformer_attention, linformer_attention_xla, linformer_reference
from attnlab.attention.ops.lowrank.nystrom import (depthwise_conv_seq, iterative_pinv, nystrom_attention,
                                                   nystrom_attention_xla, nystrom_reference, segment_means)

D.register_impl(linformer.FAMILY, "reference", linformer_reference, priority=-1)
D.register_impl(linformer.FAMILY, "xla", linformer_attention_xla)
D.register_impl(nystrom.FAMILY, "reference", nystrom_reference, priority=-1)
D.register_impl(nystrom.FAMILY, "xla", nystrom_attention_xla)

__all__ = ["depthwise_conv_seq", "iterative_pinv", "linformer_attention", "linformer_attention_xla",
           "linformer_reference", "nystrom_attention", "nystrom_attention_xla", "nystrom_reference",
           "segment_means"]
