"""Tokenizers for `prepare`: bytes (built in), sentencepiece and HF `tokenizers` (optional).

A tokenizer is named on the command line as `bytes`, `sentencepiece:PATH.model` or
`hf:PATH/tokenizer.json`. The byte tokenizer maps each byte of the UTF-8 text to its value
(vocabulary 256; it has no end-of-text token, so documents are separated by a line break,
byte 10) and needs nothing installed. The other two load a model
file the user already has; their packages are imported only then (extras `sentencepiece` and
`hf` of pyproject.toml).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

KINDS = ("bytes", "sentencepiece", "hf")
# End-of-text tokens looked up in an HF tokenizer's vocabulary, in this order.
HF_EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "[SEP]")


def file_sha256(path: pathlib.Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A loaded tokenizer: its manifest record and a batched encoder.

    Attributes:
      kind: one of KINDS.
      path: the model file ("" for bytes).
      vocab_size: ids are in [0, vocab_size).
      eos_id: the tokenizer's end-of-text id, or None.
      encode_batch: list of texts (str; bytes for the byte tokenizer) -> list of id arrays.
      takes_bytes: True when `encode_batch` takes raw bytes (no UTF-8 decoding needed).
      sha256: checksum of the model file ("" for bytes).
    """

    kind: str
    path: str
    vocab_size: int
    eos_id: int | None
    encode_batch: Callable[[Sequence], list[np.ndarray]]
    takes_bytes: bool
    sha256: str = ""

    @property
    def separator(self) -> tuple[int, ...]:
        """Ids appended after every document: end-of-text, or a line break for bytes."""
        if self.eos_id is not None:
            return (self.eos_id,)
        return (10,) if self.kind == "bytes" else ()

    def record(self) -> dict:
        """What the manifest stores about this tokenizer."""
        return {
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "separator": list(self.separator),
        }


def _bytes_encode(pieces: Sequence[bytes]) -> list[np.ndarray]:
    return [np.frombuffer(p, dtype=np.uint8) for p in pieces]


def parse(spec: str) -> Tokenizer:
    """The tokenizer that `spec` names ('bytes', 'sentencepiece:PATH', 'hf:PATH').

    Raises:
      ValueError: an unknown kind, a model file that does not exist or does not load, or a
        missing optional package (the message says which extra to install).
    """
    kind, sep, path = spec.partition(":")
    if kind == "bytes" and not sep:
        return Tokenizer("bytes", "", 256, None, _bytes_encode, takes_bytes=True)
    if kind not in KINDS or kind == "bytes" or not path:
        raise ValueError(
            f"--tokenizer must be 'bytes', 'sentencepiece:PATH.model' or "
            f"'hf:PATH/tokenizer.json', got {spec!r}"
        )
    model = pathlib.Path(path)
    if not model.is_file():
        raise ValueError(f"--tokenizer: {kind} model file {path} does not exist")
    loader = _sentencepiece if kind == "sentencepiece" else _hf
    return loader(model)


def _sentencepiece(model: pathlib.Path) -> Tokenizer:
    try:
        import sentencepiece
    except ImportError:
        raise ValueError(
            f"--tokenizer sentencepiece:{model} needs the sentencepiece package: "
            "pip install -e '.[sentencepiece]'"
        ) from None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(model))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"--tokenizer: {model} is not a sentencepiece model: {e}") from None
    eos = processor.eos_id()

    def encode(texts):
        return [np.asarray(ids, dtype=np.int64) for ids in processor.Encode(list(texts))]

    return Tokenizer(
        "sentencepiece",
        str(model),
        int(processor.GetPieceSize()),
        eos if eos >= 0 else None,
        encode,
        takes_bytes=False,
        sha256=file_sha256(model),
    )


def _hf(model: pathlib.Path) -> Tokenizer:
    try:
        import tokenizers
    except ImportError:
        raise ValueError(
            f"--tokenizer hf:{model} needs the HF tokenizers package: pip install -e '.[hf]'"
        ) from None
    try:
        tok = tokenizers.Tokenizer.from_file(str(model))
    except Exception as e:  # tokenizers raises its own Exception subclass on a bad file
        raise ValueError(f"--tokenizer: {model} is not an HF tokenizer.json: {e}") from None
    eos = next((tok.token_to_id(t) for t in HF_EOS_TOKENS if tok.token_to_id(t) is not None), None)

    def encode(texts):
        encodings = tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    return Tokenizer(
        "hf",
        str(model),
        int(tok.get_vocab_size(with_added_tokens=True)),
        eos,
        encode,
        takes_bytes=False,
        sha256=file_sha256(model),
    )
