"""Grain pipelines: an infinite, checkpointable training iterator and fixed eval batches.

Both are built from an `example_fn(index) -> dict of numpy arrays` that is a pure
function of its index (see `attnlab.data.seeding`). The training pipeline is

  MapDataset.range(n or "infinite")          # example indices
    .seed(seed).shuffle().repeat()           # only for a finite pool of n examples
    [host rows]                              # this host's rows of each global batch
    .map(example_fn)
    .batch(per_host_batch, drop_remainder=True)
    .to_iter_dataset(ReadOptions(...))

and `iter(...)` of it is a `grain.DatasetIterator` whose whole state is
`{"next_index": k}` (`get_state()` / `set_state()`); restoring a state replays
exactly the batches that followed it. With `num_examples=None` every index is a
fresh example (the range has sys.maxsize elements, so the iterator never ends);
with a finite pool (Zoology's fixed training set) the pool is reshuffled every
epoch by `repeat` (which reseeds `shuffle` per epoch). Host s of n takes rows
[s*B_host, (s+1)*B_host) of every global batch (as `eval_batches` does), so the
hosts' batches concatenated in process order are the one-host run's batch, row for
row, and `jax.make_array_from_process_local_data` places them where one host's would be.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import grain
import numpy as np

Example = dict[str, np.ndarray]

DEFAULT_NUM_THREADS = 8
DEFAULT_PREFETCH = 32  # elements (= batches here) buffered ahead by the reader threads
# The most eval examples `eval_batches` builds in host memory (example by example, before anything
# compiles). Eval sets are small (LRA 2,000, CIFAR-10's test 10,000, ImageNet's val 50,000); a
# bigger request is a mistyped size, which would otherwise hang the setup.
MAX_EVAL_EXAMPLES = 1_000_000


def host_batch_size(batch_size: int, shard_count: int) -> int:
  """Per-host batch: the global `batch_size` split evenly over `shard_count` hosts."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if batch_size % shard_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by the number of data shards "
                     f"(processes) {shard_count}")
  return batch_size // shard_count


def _default_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  """(process_index, process_count) from jax unless given explicitly."""
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} out of range for shard_count={shard_count}")
  return shard_index, shard_count


def train_dataset(
    example_fn: Callable[[int], Example],
    *,
    batch_size: int,
    seed: int,
    num_examples: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = DEFAULT_NUM_THREADS,
    prefetch: int = DEFAULT_PREFETCH,
) -> grain.IterDataset:
  """Returns the infinite training `grain.IterDataset` of batches.

  Each element is `example_fn`'s dict with a leading axis of
  batch_size // shard_count (e.g. inputs int32 [B_host, T]). `num_examples=None`
  (or 0) gives fresh examples forever; a positive value cycles a fixed pool of that
  many examples, reshuffled each epoch with `seed`. Shards default to
  (jax.process_index(), jax.process_count()); hosts see disjoint example indices, host s
  the rows [s*B_host, (s+1)*B_host) of each global batch of the one-host stream.
  `iter(train_dataset(...))` is the checkpointable `grain.DatasetIterator`.
  """
  shard_index, shard_count = _default_shard(shard_index, shard_count)
  per_host = host_batch_size(batch_size, shard_count)
  if num_examples:
    if num_examples < batch_size:
      raise ValueError(f"num_examples={num_examples} is smaller than batch_size={batch_size}")
    ds = grain.MapDataset.range(num_examples).seed(seed).shuffle().repeat()
  else:
    ds = grain.MapDataset.range(sys.maxsize)
  if shard_count > 1:
    ds = _host_rows(ds, per_host, shard_index, shard_count)
  ds = ds.map(example_fn).batch(per_host, drop_remainder=True)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=prefetch))


def _host_rows(ds: grain.MapDataset, per_host: int, shard_index: int,
               shard_count: int) -> grain.MapDataset:
  """Host `shard_index`'s elements of `ds`, in order: element k is ds[position(k)] with
  position(k) = (k // per_host) * per_host * shard_count + shard_index * per_host + k % per_host,
  i.e. this host's contiguous block of rows of each global batch."""
  global_batch = per_host * shard_count

  def element(k):
    k = int(k)
    return ds[(k // per_host) * global_batch + shard_index * per_host + k % per_host]
  return grain.MapDataset.range(len(ds) // shard_count).map(element)


def train_iterator(example_fn: Callable[[int], Example], **kwargs: Any) -> grain.DatasetIterator:
  """`iter(train_dataset(example_fn, **kwargs))`: the checkpointable training iterator."""
  return iter(train_dataset(example_fn, **kwargs))


def eval_batches(
    example_fn: Callable[[int], Example],
    *,
    batch_size: int,
    num_batches: int,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> list[Example]:
  """Returns `num_batches` deterministic eval batches of examples 0, 1, 2, ...

  Batch j of host s holds examples (j * batch_size + s * B_host + i) for
  i < B_host = batch_size // shard_count, stacked along a new leading axis, so
  the hosts together cover the same global batches whatever their number. Built
  eagerly (eval sets are small) with the same grain MapDataset operations.
  """
  shard_index, shard_count = _default_shard(shard_index, shard_count)
  per_host = host_batch_size(batch_size, shard_count)
  if num_batches < 1:
    raise ValueError(f"num_batches must be >= 1, got {num_batches}")
  if num_batches * batch_size > MAX_EVAL_EXAMPLES:
    raise ValueError(f"eval would build {num_batches} batches x {batch_size} = {num_batches * batch_size} "
                     f"examples in memory, more than {MAX_EVAL_EXAMPLES:,}: lower config.train.batch_size, "
                     f"the eval batches or the eval split's size")
  ds = grain.MapDataset.range(num_batches * batch_size)
  ds = ds.batch(per_host, drop_remainder=True)[shard_index::shard_count]
  return [_stack([example_fn(int(i)) for i in idx]) for idx in ds]


def _stack(examples: list[Example]) -> Example:
  """Stacks a list of example dicts (nested dicts too) along a new leading (batch) axis."""
  return {k: _stack([e[k] for e in examples]) if isinstance(examples[0][k], dict)
          else np.stack([e[k] for e in examples]) for k in examples[0]}
