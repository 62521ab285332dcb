"""`prepare`: text files or JSONL -> a flat token file, a validation split and a manifest.

    python -m experiments.data prepare --input 'corpus/**/*.txt' --out data/mycorpus \
        [--tokenizer bytes | sentencepiece:PATH.model | hf:PATH/tokenizer.json] \
        [--val_fraction 0.005] [--text_field text] [--overwrite]

Documents. A plain-text file is one document; a `.jsonl` file (optionally `.gz`-compressed, as
text files may be) holds one document per line, its text under `--text_field`. Files are read
in the order of the `--input` globs, each glob's matches sorted by name. After every document
comes the tokenizer's end-of-text id (a line break, byte 10, for the byte tokenizer; nothing
for a model without one). Empty documents are skipped.

Streaming. Files are read in pieces of `chunk_bytes` (4 MiB), so memory stays flat however
large the corpus. The byte tokenizer maps bytes to ids directly; the others get text decoded
as UTF-8 and cut after the last line break in each piece (after a space, or at a character
boundary, when a piece holds no line break), the usual way to tokenise a long file in parts.

Output. The tokens go to one file in the output's temporary sibling
(`.<name>.partial-<pid>`), the last `val_fraction` of them is moved to `val.bin`, checksums
are taken, `manifest.json` is written last, and the directory is renamed to `--out`. An
interrupted prepare removes its temporary directory (a killed one leaves it, without a
manifest, under a name no loader reads), so nothing that looks complete is ever half-written.
The same command on the same files writes byte-identical output.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from experiments.data import _manifest as manifest_lib
from experiments.data import _tokenizer as tokenizer_lib
from experiments.data._manifest import CorpusError

CHUNK_BYTES = 4 << 20


def expand_inputs(patterns: Sequence[str]) -> list[pathlib.Path]:
    """Files matched by `patterns` (recursive globs), in order, each once.

    Raises:
      CorpusError: a pattern that matches no file.
    """
    if not patterns:
        raise CorpusError("--input: give at least one file or glob")
    files, seen = [], set()
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise CorpusError(f"--input {pattern!r} matches no file")
        for match in matches:
            key = os.path.realpath(match)
            if key not in seen:
                seen.add(key)
                files.append(pathlib.Path(match))
    return files


def _is_jsonl(path: pathlib.Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


class _Reader:
    """Reads one input file in blocks; tracks the raw bytes read, their sha256, and progress."""

    def __init__(self, path: pathlib.Path, bar=None):
        self.path, self.bar = path, bar
        try:
            self.raw = open(path, "rb")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise CorpusError(f"cannot read input file {path}: {e.strerror or e}") from None
        self.digest = hashlib.sha256()
        self.position = 0
        hashing = _Hashing(self)
        self._stream = (
            gzip.GzipFile(fileobj=hashing, mode="rb") if path.suffix == ".gz" else hashing
        )

    def read_raw(self, n: int) -> bytes:
        try:
            data = self.raw.read(n)
        except OSError as e:
            raise CorpusError(f"cannot read input file {self.path}: {e.strerror or e}") from None
        self.digest.update(data)
        self.position += len(data)
        if self.bar is not None:
            self.bar.update(len(data))
        return data

    def blocks(self, n: int) -> Iterator[bytes]:
        """The file's (decompressed) content in blocks of up to `n` bytes."""
        while True:
            try:
                block = self._stream.read(n)
            except (OSError, EOFError) as e:
                raise CorpusError(f"cannot read input file {self.path}: {e}") from None
            if not block:
                return
            yield block

    def close(self):
        self.raw.close()


class _Hashing:
    """The raw file as gzip sees it: every byte read goes through the reader's accounting."""

    def __init__(self, reader: _Reader):
        self.reader = reader

    def read(self, n: int = -1) -> bytes:
        return self.reader.read_raw(n)


def _cut(data: bytes) -> int:
    """Where to end a text piece: after the last line break, else space, else a character."""
    for sep in (b"\n", b" "):
        at = data.rfind(sep)
        if at >= 0:
            return at + 1
    if not data or data[-1] < 0x80:
        return len(data)
    # Cut before the last (possibly incomplete) multi-byte character: step back over its
    # continuation bytes (10xxxxxx) to its lead byte.
    start = len(data) - 1
    while start > 0 and (data[start] & 0xC0) == 0x80:
        start -= 1
    return start if start > 0 else len(data)


def _decode(data: bytes, path: pathlib.Path, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"input file {path} is not UTF-8 text (byte {offset + e.start}): {e.reason}; "
            "the byte tokenizer reads any bytes"
        ) from None


def _pieces(blocks: Iterator[bytes], tok, path: pathlib.Path) -> Iterator[bytes | str]:
    """One document's text in pieces: raw blocks for the byte tokenizer, else decoded text
    cut where `_cut` says (the remainder is carried into the next piece)."""
    carry, offset = b"", 0
    for block in blocks:
        if tok.takes_bytes:
            yield block
            continue
        data = carry + block
        end = _cut(data)
        if end:
            yield _decode(data[:end], path, offset)
        offset += end
        carry = data[end:]
    if carry:
        yield _decode(carry, path, offset)


def _lines(reader: _Reader, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a file, read in blocks."""
    carry, lineno = b"", 0
    for block in reader.blocks(chunk):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        for line in lines:
            lineno += 1
            yield lineno, line
    if carry:
        yield lineno + 1, carry


def _jsonl_documents(reader: _Reader, text_field: str, chunk: int) -> Iterator[str]:
    for lineno, line in _lines(reader, chunk):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorpusError(f"input file {reader.path} line {lineno}: not JSON ({e})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise CorpusError(
                f"input file {reader.path} line {lineno}: no string field {text_field!r} "
                "(choose the field with --text_field)"
            )
        yield record[text_field]


class _Writer:
    """Appends token ids to a file, checking them against the vocabulary."""

    def __init__(self, path: pathlib.Path, tok, dtype: np.dtype):
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.tok, self.dtype, self.count = tok, dtype, 0

    def write(self, ids: np.ndarray, source: pathlib.Path) -> int:
        if ids.size:
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.tok.vocab_size:
                bad = low if low < 0 else high
                raise CorpusError(
                    f"tokenizer {self.tok.kind} {self.tok.path} gave id {bad} outside its "
                    f"vocabulary of {self.tok.vocab_size} on input file {source}"
                )
            self.file.write(memoryview(np.ascontiguousarray(ids, dtype=self.dtype)))
        self.count += ids.size
        return ids.size

    def close(self):
        self.file.close()


def _encode_file(reader: _Reader, tok, writer: _Writer, text_field: str, chunk: int) -> dict:
    """Tokenises one file into `writer`; returns its counts for the manifest."""
    path = reader.path
    eos = np.asarray(tok.separator, np.int64)
    documents = tokens = 0
    if not _is_jsonl(path):
        for piece in _pieces(reader.blocks(chunk), tok, path):
            tokens += writer.write(tok.encode_batch([piece])[0], path)
        if tokens:  # an empty file adds nothing, not even a separator
            tokens += writer.write(eos, path)
        return {"documents": int(tokens > 0), "tokens": tokens}
    batch, size = [], 0

    def flush():
        nonlocal batch, size, tokens
        if batch:
            for ids in tok.encode_batch(batch):
                if ids.size:
                    tokens += writer.write(ids, path) + writer.write(eos, path)
        batch, size = [], 0

    for text in _jsonl_documents(reader, text_field, chunk):
        if not text:
            continue
        documents += 1
        data = text.encode("utf-8")
        if len(data) > chunk:  # one long document: in pieces, then its end-of-text
            flush()
            blocks = (data[i : i + chunk] for i in range(0, len(data), chunk))
            for piece in _pieces(blocks, tok, path):
                tokens += writer.write(tok.encode_batch([piece])[0], path)
            tokens += writer.write(eos, path)
            continue
        batch.append(data if tok.takes_bytes else text)
        size += len(data)
        if size >= chunk:
            flush()
    flush()
    return {"documents": documents, "tokens": tokens}


def _split_tail(all_path, train_path, val_path, total, val_tokens, dtype) -> tuple[str, str]:
    """Moves the last `val_tokens` of `all_path` into `val_path`; returns both sha256s."""
    itemsize = np.dtype(dtype).itemsize
    train_tokens = total - val_tokens
    with open(all_path, "r+b") as src, open(val_path, "wb") as dst:
        src.seek(train_tokens * itemsize)
        shutil.copyfileobj(src, dst, 1 << 20)
        src.truncate(train_tokens * itemsize)
    os.replace(all_path, train_path)
    return tokenizer_lib.file_sha256(train_path), tokenizer_lib.file_sha256(val_path)


def prepare(
    inputs: Sequence[str],
    out: str | os.PathLike,
    tokenizer: str = "bytes",
    val_fraction: float = 0.005,
    text_field: str = "text",
    overwrite: bool = False,
    progress: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Tokenises `inputs` into the prepared corpus `out`; returns its manifest.

    Args:
      inputs: files or globs (`**` recurses); plain text, or JSONL for names ending `.jsonl`
        (either may end `.gz`).
      out: the output directory; must not exist unless `overwrite`.
      tokenizer: 'bytes', 'sentencepiece:PATH.model' or 'hf:PATH/tokenizer.json'.
      val_fraction: the share of tokens (the last ones) held out for validation, in (0, 0.5].
      text_field: the key of a JSONL record that holds its text.
      overwrite: replace an existing `out` (only once the new one is complete).
      progress: show a progress bar over the input bytes (stderr).
      chunk_bytes: bytes read per piece; memory use scales with it, not with the corpus.

    Raises:
      CorpusError (a ValueError): every bad input, naming the file; nothing is left at `out`.
    """
    started = time.perf_counter()
    if not isinstance(val_fraction, int | float) or not 0 < val_fraction <= 0.5:
        raise CorpusError(f"--val_fraction must be in (0, 0.5], got {val_fraction!r}")
    if not text_field:
        raise CorpusError("--text_field must be a non-empty key")
    if chunk_bytes < 1024:
        raise CorpusError(f"chunk_bytes must be >= 1024, got {chunk_bytes}")
    try:
        tok = tokenizer_lib.parse(tokenizer)
    except ValueError as e:
        raise CorpusError(str(e)) from None
    files = expand_inputs(inputs)
    for path in files:  # fail on an unreadable file before writing anything
        _Reader(path).close()
    out = pathlib.Path(out)
    if out.exists() and not overwrite:
        what = "a prepared corpus" if (out / manifest_lib.MANIFEST).exists() else "something"
        raise CorpusError(f"--out {out} already holds {what}; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    dtype = manifest_lib.token_dtype(tok.vocab_size)
    bar = _progress(sum(p.stat().st_size for p in files), progress)
    try:
        writer = _Writer(tmp / "all.bin", tok, dtype)
        sources = []
        for path in files:
            reader = _Reader(path, bar)
            bar.set_postfix_str(path.name[-40:], refresh=False)
            try:
                counts = _encode_file(reader, tok, writer, text_field, chunk_bytes)
            finally:
                reader.close()
            sources.append(
                {
                    "path": str(path),
                    "bytes": reader.position,
                    "sha256": reader.digest.hexdigest(),
                    **counts,
                }
            )
        writer.close()
        bar.close()
        total = writer.count
        if total == 0:
            raise CorpusError(
                f"the corpus is empty: {len(files)} input file(s) ({files[0]}, ...) hold no text"
            )
        val_tokens = max(1, round(val_fraction * total))
        if total - val_tokens < 1:
            raise CorpusError(f"the corpus has {total} token(s): too few to split off validation")
        train_sha, val_sha = _split_tail(
            tmp / "all.bin", tmp / "train.bin", tmp / "val.bin", total, val_tokens, dtype
        )
        manifest = {
            "format": manifest_lib.FORMAT,
            "tokenizer": tok.record(),
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "tokens": total,
            "documents": sum(s["documents"] for s in sources),
            "val_fraction": val_fraction,
            "text_field": text_field,
            "chunk_bytes": chunk_bytes,
            "splits": {
                "train": {"file": "train.bin", "tokens": total - val_tokens, "sha256": train_sha},
                "val": {"file": "val.bin", "tokens": val_tokens, "sha256": val_sha},
            },
            "sources": sources,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        with open(tmp / manifest_lib.MANIFEST, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, out)
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        seconds = time.perf_counter() - started
        print(
            f"prepared {out}: {total:,} tokens ({total - val_tokens:,} train, {val_tokens:,} "
            f"val) from {len(files)} file(s), vocabulary {tok.vocab_size} ({dtype.name}), "
            f"{seconds:.1f} s",
            file=sys.stderr,
        )
    return manifest


def _publish(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Renames the finished `tmp` to `out`; an old `out` is removed only after that."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="prepare",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )
