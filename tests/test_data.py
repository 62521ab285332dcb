"""experiments.data: `prepare` (files, determinism, every bad input, atomic output, flat memory)
and the token-file source (manifest checks at load, a seeded window order, row reads)."""

from __future__ import annotations

import collections
import gzip
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import data
from experiments.data import _prepare, _tokenizer

REPO = pathlib.Path(__file__).resolve().parent.parent
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards hex jolly bumpkins".split()


def write_corpus(root: pathlib.Path, lines: int = 300, seed: int = 0) -> pathlib.Path:
    """Two text files, a gzipped one and a JSONL file of short documents (with non-ASCII)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def text(n):
        return "".join(" ".join(rng.choice(WORDS, 9)) + ".\n" for _ in range(n))

    (root / "a.txt").write_text(text(lines))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "b.txt").write_text(text(lines))
    with gzip.open(root / "sub" / "c.txt.gz", "wt") as f:
        f.write(text(lines // 2))
    with open(root / "d.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"id": i, "text": f"doc {i}: {text(1)} naïve café"}) + "\n")
    return root


def expected_bytes(root: pathlib.Path) -> bytes:
    """The byte tokenizer's token stream for write_corpus, in prepare's file order."""
    out = b""
    for name in ("a.txt", "d.jsonl", "sub/b.txt", "sub/c.txt.gz"):
        path = root / name
        if name.endswith(".jsonl"):
            for line in path.read_text().splitlines():
                out += json.loads(line)["text"].encode() + b"\n"
        else:
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            out += raw + b"\n"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("text"))
    out = root.parent / "prepared"
    manifest = data.prepare([str(root / "**" / "*")], out, val_fraction=0.1, progress=False)
    return root, out, manifest


def read_tokens(out: pathlib.Path, split: str) -> np.ndarray:
    manifest = json.loads((out / "manifest.json").read_text())
    return np.fromfile(out / f"{split}.bin", dtype=manifest["dtype"])


def test_prepare_writes_tokens_split_and_manifest(corpus):
    root, out, manifest = corpus
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train.bin", "val.bin"]
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["vocab_size"] == 256 and manifest["dtype"] == "uint16"
    stream = np.concatenate([read_tokens(out, "train"), read_tokens(out, "val")])
    assert bytes(stream.astype(np.uint8)) == expected_bytes(root)
    splits = manifest["splits"]
    total = splits["train"]["tokens"] + splits["val"]["tokens"]
    assert total == manifest["tokens"] == len(stream)
    assert splits["val"]["tokens"] == round(0.1 * total)
    for split in ("train", "val"):
        assert splits[split]["sha256"] == _tokenizer.file_sha256(out / f"{split}.bin")
    sources = manifest["sources"]
    assert [pathlib.Path(s["path"]).relative_to(root).as_posix() for s in sources] == [
        "a.txt",
        "d.jsonl",
        "sub/b.txt",
        "sub/c.txt.gz",
    ]
    assert [s["documents"] for s in sources] == [1, 40, 1, 1]
    assert sum(s["tokens"] for s in sources) == total
    assert sources[3]["bytes"] == (root / "sub" / "c.txt.gz").stat().st_size
    assert sources[0]["sha256"] == _tokenizer.file_sha256(root / "a.txt")


def test_same_command_gives_identical_files(corpus, tmp_path):
    root, out, _ = corpus
    again = tmp_path / "again"
    data.prepare([str(root / "**" / "*")], again, val_fraction=0.1, progress=False)
    for name in ("manifest.json", "train.bin", "val.bin"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_pieces_do_not_change_the_byte_stream(corpus, tmp_path):
    # Reading in 1 KiB pieces (the smallest allowed) gives the same tokens as 4 MiB pieces.
    root, out, _ = corpus
    small = tmp_path / "small"
    data.prepare(
        [str(root / "**" / "*")], small, val_fraction=0.1, progress=False, chunk_bytes=1024
    )
    for split in ("train", "val"):
        np.testing.assert_array_equal(read_tokens(small, split), read_tokens(out, split))


def test_cut_keeps_lines_and_characters_whole():
    assert _prepare._cut(b"ab\ncd ef") == 3
    assert _prepare._cut(b"abcd ef") == 5
    assert _prepare._cut(b"abcdef") == 6
    text = "xé€😀".encode()  # 1 + 2 + 3 + 4 bytes
    for end in range(2, len(text) + 1):
        cut = _prepare._cut(text[:end])
        text[:cut].decode()  # never splits a character


def test_command_line(tmp_path):
    root = write_corpus(tmp_path / "text", lines=20)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "experiments.data"]
    ok = subprocess.run(
        [*base, "prepare", "--input", str(root / "*.txt"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "prepared" in ok.stderr and "100%" in ok.stderr  # summary line and progress bar
    check = subprocess.run(
        [*base, "check", str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True
    bad = subprocess.run(
        [*base, "prepare", "--input", str(tmp_path / "nothing*.txt"), "--out", "x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1
    assert "matches no file" in bad.stderr and "Traceback" not in bad.stderr


# --- bad input: an error naming the file, and nothing written ---------------------------------


def assert_nothing_written(out: pathlib.Path):
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary directory left either


def test_bad_inputs_name_the_file_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    cases = []
    cases.append(([str(tmp_path / "none" / "*.txt")], {}, "matches no file"))
    (tmp_path / "empty").mkdir()
    for name in ("e1.txt", "e2.txt"):
        (tmp_path / "empty" / name).write_text("")
    cases.append(([str(tmp_path / "empty" / "*.txt")], {}, "corpus is empty"))
    bad_gz = tmp_path / "bad.txt.gz"
    bad_gz.write_bytes(b"this is not gzip data")
    cases.append(([str(bad_gz)], {}, f"cannot read input file {bad_gz}"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": broken\n')
    cases.append(([str(bad_json)], {}, f"input file {bad_json} line 2: not JSON"))
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"body": "x"}\n')
    cases.append(([str(no_field)], {}, "no string field 'text'"))
    good = tmp_path / "good.txt"
    good.write_text("hello world\n" * 50)
    missing_model = tmp_path / "nope.model"
    cases.append(([str(good)], {"tokenizer": f"sentencepiece:{missing_model}"}, str(missing_model)))
    cases.append(([str(good)], {"tokenizer": f"hf:{tmp_path / 'tok.json'}"}, "tok.json"))
    cases.append(([str(good)], {"tokenizer": "words"}, "--tokenizer must be"))
    cases.append(([str(good)], {"val_fraction": 0.0}, "--val_fraction"))
    cases.append(([str(good)], {"val_fraction": 0.9}, "--val_fraction"))
    for inputs, kwargs, message in cases:
        with pytest.raises(data.CorpusError, match=message.replace("[", r"\[").replace("?", ".")):
            data.prepare(inputs, out, progress=False, **kwargs)
        assert_nothing_written(out)


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = tmp_path / "secret.txt"
    path.write_text("x" * 100)
    path.chmod(0)
    with pytest.raises(data.CorpusError, match=f"cannot read input file {path}"):
        data.prepare([str(path)], tmp_path / "out", progress=False)
    assert_nothing_written(tmp_path / "out")


def test_token_id_outside_the_vocabulary_names_the_file(tmp_path, monkeypatch):
    # A tokenizer that claims a vocabulary of 100 but emits raw bytes (ids up to 255).
    fake = _tokenizer.Tokenizer("bytes", "", 100, None, _tokenizer._bytes_encode, True)
    monkeypatch.setattr(_tokenizer, "parse", lambda spec: fake)
    path = tmp_path / "high.txt"
    path.write_text("plain ascii is fine, but \u00ff is byte 195 then 191")
    with pytest.raises(data.CorpusError, match=f"gave id 195 outside .* 100 on input file {path}"):
        data.prepare([str(path)], tmp_path / "out", progress=False)
    assert_nothing_written(tmp_path / "out")


def test_non_utf8_text_needs_the_byte_tokenizer(tmp_path):
    pytest.importorskip("sentencepiece")
    model = train_sentencepiece(tmp_path)
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(data.CorpusError, match=f"{path} is not UTF-8 text \\(byte 3\\)"):
        data.prepare([str(path)], tmp_path / "out", tokenizer=f"sentencepiece:{model}")
    data.prepare([str(path)], tmp_path / "out", progress=False)  # bytes read anything


def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "text", lines=50)
    calls = []
    real_write = _prepare._Writer.write

    def interrupted(self, ids, source):
        calls.append(source)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(self, ids, source)

    monkeypatch.setattr(_prepare._Writer, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.prepare([str(root / "*.txt"), str(root / "d.jsonl")], tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_existing_output_needs_overwrite(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "out"
    data.prepare([str(root / "a.txt")], out, progress=False)
    first = (out / "manifest.json").read_text()
    with pytest.raises(data.CorpusError, match="already holds a prepared corpus"):
        data.prepare([str(root / "sub" / "b.txt")], out, progress=False)
    assert (out / "manifest.json").read_text() == first
    data.prepare([str(root / "sub" / "b.txt")], out, progress=False, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["sources"][0]["path"].endswith("b.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old copy is gone


# --- optional tokenizers ----------------------------------------------------------------------


def train_sentencepiece(tmp_path: pathlib.Path) -> pathlib.Path:
    import sentencepiece

    lines = [" ".join(WORDS[i:] + WORDS[:i]) + ". doc 0123456789: naïve café" for i in range(15)]
    prefix = tmp_path / "sp"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=60,
        model_type="bpe",
        unk_id=0,
        eos_id=1,
        bos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def test_sentencepiece_tokenizer(corpus, tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    root, _, _ = corpus
    model = train_sentencepiece(tmp_path)
    out = tmp_path / "sp_out"
    manifest = data.prepare(
        [str(root / "a.txt"), str(root / "d.jsonl")],
        out,
        tokenizer=f"sentencepiece:{model}",
        progress=False,
    )
    assert manifest["tokenizer"]["kind"] == "sentencepiece"
    assert manifest["vocab_size"] == 60 and manifest["tokenizer"]["separator"] == [1]
    assert manifest["tokenizer"]["sha256"] == _tokenizer.file_sha256(model)
    ids = np.concatenate([read_tokens(out, "train"), read_tokens(out, "val")]).tolist()
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    documents = 1 + 40
    assert ids.count(1) == documents == manifest["documents"]
    first = ids[: ids.index(1)]
    assert processor.Decode(first).split() == (root / "a.txt").read_text().split()


def test_hf_tokenizer(corpus, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    root, _, _ = corpus
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([(root / "a.txt").read_text()], trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    out = tmp_path / "hf_out"
    manifest = data.prepare([str(root / "d.jsonl")], out, tokenizer=f"hf:{path}", progress=False)
    assert manifest["tokenizer"]["eos_id"] == 0 and manifest["documents"] == 40
    ids = np.concatenate([read_tokens(out, "train"), read_tokens(out, "val")]).tolist()
    texts = tok.decode(ids, skip_special_tokens=False).split("<|endoftext|>")
    lines = (root / "d.jsonl").read_text().splitlines()
    assert texts[:-1] == [json.loads(line)["text"] for line in lines]


# --- the prepared corpus at load ----------------------------------------------------------------


def copy_corpus(out: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    dest.mkdir()
    for p in out.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def test_load_checks_the_manifest(corpus, tmp_path):
    _, out, _ = corpus
    ok = data.TokenCorpus(out, context=16, seed=0)
    assert ok.vocab_size == 256

    bad = copy_corpus(out, tmp_path / "flipped")
    tokens = bytearray((bad / "train.bin").read_bytes())
    tokens[100] ^= 1
    (bad / "train.bin").write_bytes(bytes(tokens))
    with pytest.raises(data.CorpusError, match=f"{bad / 'train.bin'} does not match its checksum"):
        data.TokenCorpus(bad, 16, 0)

    short = copy_corpus(out, tmp_path / "short")
    (short / "val.bin").write_bytes((short / "val.bin").read_bytes()[:-2])
    with pytest.raises(data.CorpusError, match=f"{short / 'val.bin'} holds .* truncated"):
        data.TokenCorpus(short, 16, 0)

    corrupt = copy_corpus(out, tmp_path / "corrupt")
    (corrupt / "manifest.json").write_text('{"format": "experiments.data/1", "tok')
    with pytest.raises(data.CorpusError, match=f"corrupt manifest {corrupt / 'manifest.json'}"):
        data.TokenCorpus(corrupt, 16, 0)

    # A manifest whose vocabulary is too small for the ids the files hold (a mismatch).
    small = copy_corpus(out, tmp_path / "small_vocab")
    manifest = json.loads((small / "manifest.json").read_text())
    manifest["vocab_size"] = 100
    (small / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(data.CorpusError, match=f"{small / 'train.bin'} holds token id 1\\d\\d"):
        data.TokenCorpus(small, 16, 0)

    missing = copy_corpus(out, tmp_path / "missing")
    (missing / "manifest.json").unlink()  # what a killed prepare's temporary directory lacks
    with pytest.raises(data.CorpusError, match=f"{missing / 'manifest.json'} is missing"):
        data.TokenCorpus(missing, 16, 0)
    with pytest.raises(data.CorpusError, match="does not exist"):
        data.TokenCorpus(tmp_path / "nowhere", 16, 0)


def test_context_longer_than_the_validation_split(corpus):
    _, out, manifest = corpus
    n_val = manifest["splits"]["val"]["tokens"]
    data.TokenCorpus(out, n_val - 1, 0)
    with pytest.raises(data.CorpusError, match=f"longer than the val split {out / 'val.bin'}"):
        data.TokenCorpus(out, n_val, 0)


def test_window_order_is_a_function_of_seed_and_step(corpus):
    _, out, manifest = corpus
    context, batch = 16, 8
    a, b = data.TokenCorpus(out, context, 0), data.TokenCorpus(out, context, 0)
    other = data.TokenCorpus(out, context, 1)
    np.testing.assert_array_equal(a.rows(5, batch, range(batch)), b.rows(5, batch, range(batch)))
    assert not np.array_equal(a.rows(5, batch, range(batch)), other.rows(5, batch, range(batch)))
    # Any subset of rows, read alone, equals those rows of the whole batch.
    whole = a.rows(7, batch, range(batch))
    np.testing.assert_array_equal(b.rows(7, batch, [1, 4, 6]), whole[[1, 4, 6]])
    # One epoch visits every window (consecutive slices at stride `context`) exactly once.
    train = read_tokens(out, "train").astype(np.int32)
    windows = collections.Counter(w.tobytes() for w in _windows(train, context))
    n = a.train_windows
    assert n == (manifest["splits"]["train"]["tokens"] - 1) // context == windows.total()
    epoch = np.concatenate([a.rows(t, batch, range(batch)) for t in range(n // batch)])
    visited = collections.Counter(row.tobytes() for row in epoch)
    assert visited.total() == n // batch * batch
    assert not visited - windows  # no window more often than the split holds it
    assert (windows - visited).total() == n % batch  # only the epoch's last partial batch
    # The next epoch is another permutation of the same windows.
    second = a.rows(n // batch + 3, batch, range(batch))
    assert all(row.tobytes() in windows for row in second)


def _windows(tokens: np.ndarray, context: int) -> np.ndarray:
    n = (len(tokens) - 1) // context
    return np.stack([tokens[i * context : i * context + context + 1] for i in range(n)])


def test_eval_windows_are_fixed_and_evenly_spaced(corpus):
    _, out, _ = corpus
    corpus_ = data.TokenCorpus(out, 16, 0)
    val = _windows(read_tokens(out, "val").astype(np.int32), 16)
    np.testing.assert_array_equal(
        corpus_.eval_windows(4), val[np.linspace(0, len(val) - 1, 4).round().astype(int)]
    )
    np.testing.assert_array_equal(corpus_.eval_windows(10**6), val)  # all when there are fewer


# --- memory -------------------------------------------------------------------------------------

_RSS_CHILD = """
import resource, sys
from experiments.data import _prepare
_prepare.prepare([sys.argv[1]], sys.argv[2], progress=False, chunk_bytes=int(sys.argv[3]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(path: pathlib.Path, out: pathlib.Path, chunk: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path), str(out), str(chunk)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=True,
    )
    return int(result.stdout.split()[-1])


def test_peak_memory_of_prepare_is_flat(tmp_path):
    # Corpora of 1 and 10 chunks: the larger one must not need more memory (a prepare that
    # held the corpus would need 9 chunks more of text, and twice that as uint16 tokens).
    chunk = 1 << 20
    rng = np.random.default_rng(0)
    sizes = {}
    for chunks in (1, 10):
        path = tmp_path / f"c{chunks}.txt"
        with open(path, "wb") as f:
            for _ in range(chunks):
                f.write(rng.integers(32, 127, chunk, dtype=np.uint8).tobytes())
        sizes[chunks] = peak_rss_kib(path, tmp_path / f"out{chunks}", chunk)
    grow_mib = (sizes[10] - sizes[1]) / 1024
    assert grow_mib < 3, f"peak RSS grew by {grow_mib:.1f} MiB from 1 to 10 chunks: {sizes}"
