"""The batches of one stage on the mesh: pipeline -> padded to the stage's length -> the fields its step reads ->
global arrays (`parallel.to_global`), built ahead of the step in a background thread (`prefetch.Prefetcher`).

Shapes are agreed without talking to other hosts. A global batch's padded length is its bucket length (plus the
stage's `extra_columns`) when every host holds rows of the same global batch: single-process runs, evaluation
and `host_reading=all`. With `host_reading=shards` and several processes each host batches its own rows, so their
buckets differ at a step; there every batch is padded to the longest bucket, a length all hosts know statically.
That costs compute on short batches, but needs no per-step collective and no shared bucket schedule.
"""

from __future__ import annotations

import jax
import numpy as np

from herberta_jax.data import languages as languages_lib
from herberta_jax.data.pipeline import Pipeline
from herberta_jax.training import parallel
from herberta_jax.training.prefetch import Prefetcher


def bucket_lengths(boundaries, max_seq_len: int) -> list[int]:
  """The padded lengths of the run, as the pipeline derives them from its boundaries."""
  lengths = sorted({int(b) for b in boundaries})
  return lengths + ([max_seq_len] if max_seq_len > lengths[-1] else [])


class RowSlice:
  """A pipeline of global batches seen by one process: its contiguous slice of rows of each batch."""

  def __init__(self, pipeline: Pipeline, index: int, count: int):
    self.pipeline, self.index, self.count = pipeline, index, count

  def num_examples(self) -> int:
    return self.pipeline.num_examples()

  def batches(self, start_batch: int = 0):
    for batch in self.pipeline.batches(start_batch=start_batch):
      rows = len(batch["input_ids"]) // self.count
      yield {k: v[self.index * rows:(self.index + 1) * rows] for k, v in batch.items()}


class StageFeed:
  """One split's batches for one stage: `batch_size` rows a step over all processes."""

  def __init__(self, config, data_dir, split: str, stage, mesh, *, batch_size: int, batch_flag: str, train: bool):
    count, index = jax.process_count(), jax.process_index()
    if batch_size % mesh.size:
      raise ValueError(f"--config.{batch_flag}={batch_size} (the global batch) does not split over the "
                       f"{mesh.size} devices of the mesh: use a multiple of {mesh.size}")
    if config.data.host_reading not in ("all", "shards"):
      raise ValueError(f"--config.data.host_reading={config.data.host_reading!r}: use shards or all")
    self.mesh, self.fields, self.extra = mesh, stage.train_fields if train else stage.dev_fields, stage.extra_columns
    self.batch_size = batch_size
    self.pad_id = stage.manifest["tokenizer"]["pad_id"]
    self.depth = config.data.prefetch_batches
    lengths = bucket_lengths(config.data.bucket_boundaries, int(stage.manifest["max_seq_len"]))
    # Evaluation splits are small and one pass: every host reads them whole and keeps its slice of each batch, so
    # all hosts run the same number of batches (with disjoint shards one host may run out first and leave the
    # others waiting in a collective). Training streams repeat, so no host runs out.
    every_host_reads_all = config.data.host_reading == "all" or not train
    self.fixed_length = max(lengths) if count > 1 and not every_host_reads_all else None
    self.lengths = [self.fixed_length] if self.fixed_length else lengths  # the padded lengths a batch can have
    langs = languages_lib.resolve_languages(config.data.languages) if config.data.languages else None
    # Buckets `extra` shorter than the padded lengths leave the room the stage needs after each row (the tagger's
    # two prefix tokens), so the padded lengths are still the run's bucket lengths.
    pipeline = Pipeline(data_dir, split, batch_size=batch_size if every_host_reads_all else batch_size // count,
                        languages=langs, mixture=config.data.mixture, temperature=config.data.temperature,
                        shuffle=train, seed=config.seed, bucket_boundaries=[b - self.extra for b in lengths],
                        repeat=train, process_index=0 if every_host_reads_all else index,
                        process_count=1 if every_host_reads_all else count)
    self.pipeline = RowSlice(pipeline, index, count) if every_host_reads_all and count > 1 else pipeline
    self._whole_pipeline = pipeline  # all rows of each batch, as the step's global batch has them

  def num_examples(self) -> int:
    return self.pipeline.num_examples()

  def _padded(self, batch: dict) -> dict:
    length = batch["input_ids"].shape[1]
    target = self.fixed_length or length + self.extra
    out = {}
    for key in self.fields:
      value = batch[key]
      if key in ("input_ids", "attention_mask") and target > length:
        value = np.pad(value, [(0, 0), (0, target - length)],
                       constant_values=self.pad_id if key == "input_ids" else 0)
      out[key] = value
    return out

  def abstract_batch(self, length: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch of padded length `length` (one of `self.lengths`) as the step receives it: shapes,
    dtypes and shardings, nothing read."""
    # With a fixed length, every bucket is padded to it: the shortest stands for all.
    bucket = self._whole_pipeline.bucket_lengths[0] if self.fixed_length else length - self.extra
    host = self._padded(self._whole_pipeline.empty_batch(bucket))
    sharding = parallel.batch_sharded(self.mesh)
    return {key: jax.ShapeDtypeStruct((self.batch_size,) + value.shape[1:], value.dtype, sharding=sharding)
            for key, value in parallel.host_arrays(host).items()}

  def _placed(self, start_batch: int):
    for batch in self.pipeline.batches(start_batch=start_batch):
      yield parallel.to_global(self._padded(batch), self.mesh)

  def device_batches(self, start_batch: int = 0) -> Prefetcher:
    """Global batches on the mesh from the `start_batch`-th on, built ahead in a thread (close() it)."""
    return Prefetcher(self._placed(start_batch), self.depth)
