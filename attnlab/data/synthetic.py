"""Index of the synthetic generators: name -> `fn(seed, index, **kwargs) -> example`.

Each generator is numpy-only and deterministic in (seed, index) and returns
`inputs` int32 [T], `targets` int32 [T] and `weights` float32 [T].
"""

from __future__ import annotations

from attnlab.data.copying import copy, selective_copy
from attnlab.data.induction_heads import induction
from attnlab.data.associative_recall import mqar

GENERATORS = {
    "mqar": mqar,
    "copy": copy,
    "selective_copy": selective_copy,
    "induction": induction,
}

__all__ = ["GENERATORS", "mqar", "copy", "selective_copy", "induction"]
