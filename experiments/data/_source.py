"""The token-file source: a prepared corpus read through memory maps, windows in grain's order.

Training windows. The training split (n tokens) is cut into `(n - 1) // context` windows of
`context + 1` tokens at stride `context` (each window's last token is the next one's first, so
every token is a target once per epoch). A grain `MapDataset` shuffles the window indices with
`seed` and repeats them, a fresh permutation per epoch, so element k of the stream is a pure
function of (seed, k). Row r of the batch of step t is element `t * batch_size + r`: any row
of any step can be read on its own, which is how each process of a multi-process run reads only
the rows its devices hold, and why resume and forks see exactly the data of an uninterrupted run.
grain's shuffle is part of the data order: pin the grain version across a run and its resumes.

Random access instead of grain's `DataLoader`: the loader's iterator would be a second piece of
state to checkpoint next to the step, and its worker processes buy nothing here (reading a row
is a memory-mapped slice; 512 rows cost about 20 ms on this 2-core CPU, see BENCHMARKS.md).

Validation windows. The validation split is cut the same way, and `count` of its windows,
evenly spaced, are the fixed eval set (all of them when there are fewer).

Nothing is read into memory except the rows asked for: the splits are `np.memmap`s.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from experiments.data import _manifest as manifest_lib
from experiments.data._manifest import CorpusError


class _Windows:
    """grain's random-access source: window i of a memory-mapped split, as int32."""

    def __init__(self, tokens: np.ndarray, context: int):
        self.tokens, self.context = tokens, context

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.context

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(i) * self.context
        return np.asarray(self.tokens[start : start + self.context + 1], dtype=np.int32)


class TokenCorpus:
    """A prepared corpus opened for training windows of `context + 1` tokens.

    Args:
      directory: a directory written by `python -m experiments.data prepare`.
      context: tokens a model sees per row (a row holds `context + 1`: inputs and targets).
      seed: the data order's seed.

    Raises:
      CorpusError: a missing or corrupt manifest or split (see `manifest.load`), or a split
        too short for one window of `context + 1` tokens; the message names the file.
    """

    def __init__(self, directory: str | os.PathLike, context: int, seed: int):
        import grain  # imported here: only runs on prepared corpora pay for it

        self.directory = pathlib.Path(directory)
        self.manifest = manifest_lib.load(self.directory)
        self.vocab_size = int(self.manifest["vocab_size"])
        self.context = context
        self.seed = seed
        self.train = self._open("train")
        self.val = self._open("val")
        source = _Windows(self.train, context)
        self.train_windows = len(source)
        self.stream = grain.MapDataset.source(source).shuffle(seed=seed).repeat()

    def _open(self, split: str) -> np.ndarray:
        path = manifest_lib.split_path(self.directory, self.manifest, split)
        n = int(self.manifest["splits"][split]["tokens"])
        if n < self.context + 1:
            raise CorpusError(
                f"workload context {self.context} is longer than the {split} split {path} "
                f"({n:,} tokens; a window needs context + 1): use a shorter context"
                + (", or prepare with a larger --val_fraction" if split == "val" else "")
            )
        return np.memmap(path, dtype=np.dtype(self.manifest["dtype"]), mode="r", shape=(n,))

    def rows(self, step: int, batch_size: int, rows) -> np.ndarray:
        """Rows `rows` of the batch of `step`: int32 of shape (len(rows), context + 1)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        base = step * batch_size
        out = np.empty((len(rows), self.context + 1), np.int32)
        for i, r in enumerate(rows):
            out[i] = self.stream[base + int(r)]
        return out

    def eval_windows(self, count: int) -> np.ndarray:
        """`count` evenly spaced windows of the validation split (fewer if it has fewer)."""
        windows = _Windows(self.val, self.context)
        n = len(windows)
        picks = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))
        return np.stack([windows[i] for i in picks])
