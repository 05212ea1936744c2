"""Task data: synthetic generators, char/byte text, LRA ListOps, label,text CSVs; grain pipelines.

Each generator is numpy-only and deterministic in (seed, index). Importing this package
imports numpy only (no grain, jax or flax; a test checks it): the grain pipelines are in
`attnlab.data.pipeline`, imported by the tasks that batch with them.
"""

from attnlab.data.associative_recall import mqar
from attnlab.data.copying import copy, selective_copy
from attnlab.data.induction_heads import induction
from attnlab.data.seeding import derive_seed, example_rng
from attnlab.data.text import CharVocab, load_text_tokens

__all__ = ["copy", "selective_copy", "induction", "mqar", "derive_seed", "example_rng", "CharVocab",
           "load_text_tokens"]
