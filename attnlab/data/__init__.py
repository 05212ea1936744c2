"""Task data: synthetic generators, char/byte text, grain pipelines (numpy + grain, no jax)."""

from attnlab.data.associative_recall import mqar
from attnlab.data.checkpointing import (DATA_ITEM, iterator_restore_args, iterator_save_args,
                                        iterator_state_json, restore_iterator_state_json)
from attnlab.data.copying import copy, selective_copy
from attnlab.data.induction_heads import induction
from attnlab.data.pipeline import eval_batches, train_dataset, train_iterator
from attnlab.data.seeding import derive_seed, example_rng
from attnlab.data.synthetic import GENERATORS
from attnlab.data.text import CharVocab, load_text_tokens

__all__ = [
    "DATA_ITEM", "iterator_restore_args", "iterator_save_args", "iterator_state_json",
    "restore_iterator_state_json", "copy", "selective_copy", "induction", "mqar",
    "eval_batches", "train_dataset", "train_iterator", "derive_seed", "example_rng",
    "GENERATORS", "CharVocab", "load_text_tokens",
]
