"""The manifest of a prepared corpus, and its check at load.

A prepared corpus is a directory:

    manifest.json   format, tokenizer (kind, model path and checksum, vocabulary size, end-of-text
                    id), token dtype, the splits (file, token count, sha256 of the file), the
                    source files in the order they were read (bytes, documents, tokens, sha256)
    train.bin       the training tokens, flat, little-endian uint16 (vocabulary <= 65,536) or uint32
    val.bin         the validation tokens: the last `val_fraction` of the token stream

`prepare` writes `manifest.json` last, into a temporary directory that is renamed to the output
only when everything is written, so a directory with a manifest is complete. `load` checks it
all again (sizes, checksums, every token id below the vocabulary size); each failure is a
`CorpusError` that names the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib

import numpy as np

FORMAT = "experiments.data/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
_REQUIRED = ("format", "tokenizer", "vocab_size", "dtype", "splits", "sources")


class CorpusError(ValueError):
    """A prepared corpus (or its input) is missing, corrupt or does not fit; names the file."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def read(directory: str | os.PathLike) -> dict:
    """The manifest of `directory`, its keys and types checked (the files are not read)."""
    directory = pathlib.Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CorpusError(
            f"prepared corpus {directory} does not exist (run experiments.data prepare)"
        )
    if not path.is_file():
        raise CorpusError(
            f"{path} is missing: {directory} is not a prepared corpus, or its prepare did "
            "not finish (rerun `python -m experiments.data prepare`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusError(f"corrupt manifest {path}: {e}") from None
    if not isinstance(manifest, dict):
        raise CorpusError(f"corrupt manifest {path}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise CorpusError(f"corrupt manifest {path}: missing keys {missing}")
    if manifest["format"] != FORMAT:
        raise CorpusError(
            f"manifest {path} has format {manifest['format']!r}; this code reads {FORMAT!r}"
        )
    vocab = manifest["vocab_size"]
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise CorpusError(f"corrupt manifest {path}: vocab_size must be an int >= 1, got {vocab!r}")
    if manifest["dtype"] != token_dtype(vocab).name:
        raise CorpusError(
            f"manifest {path} says dtype {manifest['dtype']!r}, but a vocabulary of {vocab} "
            f"is stored as {token_dtype(vocab).name}"
        )
    splits = manifest["splits"]
    for name in SPLITS:
        entry = splits.get(name) if isinstance(splits, dict) else None
        ok = isinstance(entry, dict) and {"file", "tokens", "sha256"} <= set(entry)
        ok = ok and isinstance(entry["tokens"], int) and entry["tokens"] >= 0
        ok = ok and isinstance(entry["file"], str) and "/" not in entry["file"]
        if not ok:
            raise CorpusError(
                f"corrupt manifest {path}: splits.{name} must hold file, tokens, sha256"
            )
    return manifest


def split_path(directory: str | os.PathLike, manifest: dict, split: str) -> pathlib.Path:
    return pathlib.Path(directory) / manifest["splits"][split]["file"]


def load(directory: str | os.PathLike) -> dict:
    """The manifest of `directory` after checking every split file against it.

    Checks: the file exists, its size is tokens x itemsize, its sha256 matches, and its
    largest id is below the vocabulary size. The result is cached per (file, size, mtime), so
    building several programs on one corpus reads it once.

    Raises:
      CorpusError: naming the file that is missing, corrupt or out of range.
    """
    manifest = read(directory)
    dtype = np.dtype(manifest["dtype"])
    for split in SPLITS:
        entry = manifest["splits"][split]
        path = split_path(directory, manifest, split)
        if not path.is_file():
            raise CorpusError(f"{path} is missing (listed in {pathlib.Path(directory) / MANIFEST})")
        stat = path.stat()
        expected = entry["tokens"] * dtype.itemsize
        if stat.st_size != expected:
            raise CorpusError(
                f"{path} holds {stat.st_size:,} bytes; the manifest says {entry['tokens']:,} "
                f"{dtype.name} tokens ({expected:,} bytes): a truncated or foreign file"
            )
        digest, largest = _scan(str(path), stat.st_size, stat.st_mtime_ns, dtype.name)
        if digest != entry["sha256"]:
            raise CorpusError(
                f"{path} does not match its checksum in the manifest (sha256 {digest} != "
                f"{entry['sha256']}): the file is corrupt or from another prepare"
            )
        if largest >= manifest["vocab_size"]:
            raise CorpusError(
                f"{path} holds token id {largest}, outside the vocabulary of "
                f"{manifest['vocab_size']} that the manifest declares"
            )
    return manifest


@functools.lru_cache(maxsize=32)
def _scan(path: str, size: int, mtime_ns: int, dtype: str) -> tuple[str, int]:
    """(sha256 hex, largest id) of a token file, read in chunks (size/mtime key the cache)."""
    del size, mtime_ns
    digest = hashlib.sha256()
    largest = -1
    itemsize = np.dtype(dtype).itemsize
    with open(path, "rb") as f:
        while block := f.read((1 << 24) * itemsize):
            digest.update(block)
            ids = np.frombuffer(block, dtype=dtype)
            if ids.size:
                largest = max(largest, int(ids.max()))
    return digest.hexdigest(), largest
