"""Peak memory and speed of `python -m experiments.data prepare` as the corpus grows.

    python -m experiments.benchmarks.prepare_memory [--chunks=1,10,50] [--tokenizer=bytes]
        [--dir=/tmp/prepare_memory]

Writes corpora of 1, 10 and 50 reading chunks (4 MiB each: `_prepare.CHUNK_BYTES`) of random
printable ASCII, in files of 4 chunks, and prepares each in a fresh process. Prints wall time,
throughput and the process's peak resident memory (ru_maxrss). Streaming means the peak stays
flat while the corpus grows; tests/test_data.py checks the same at 1 MiB chunks.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from experiments.data import _prepare

_CHILD = """
import resource, sys
from experiments.data import _prepare
_prepare.prepare([sys.argv[1]], sys.argv[2], tokenizer=sys.argv[3], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
REPO = pathlib.Path(__file__).resolve().parents[2]


def write_corpus(directory: pathlib.Path, chunks: int, seed: int = 0) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    chunk = _prepare.CHUNK_BYTES
    for start in range(0, chunks, 4):
        with open(directory / f"part{start // 4:04d}.txt", "wb") as f:
            for _ in range(min(4, chunks - start)):
                text = rng.integers(32, 127, chunk, dtype=np.uint8)
                text[rng.integers(0, chunk, chunk // 80)] = 10  # line breaks
                f.write(text.tobytes())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", default="1,10,50")
    parser.add_argument("--tokenizer", default="bytes")
    parser.add_argument("--dir", default="/tmp/prepare_memory")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    print("| corpus | chunks (4 MiB) | wall s | MiB/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for chunks in (int(c) for c in args.chunks.split(",")):
        corpus = root / f"corpus{chunks}"
        write_corpus(corpus, chunks)
        tic = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(corpus / "*.txt"),
                str(root / f"out{chunks}"),
                args.tokenizer,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        seconds = time.perf_counter() - tic
        mib = chunks * _prepare.CHUNK_BYTES / 2**20
        rss = int(result.stdout.split()[-1]) / 1024
        print(f"| {mib:.0f} MiB | {chunks} | {seconds:.1f} | {mib / seconds:.0f} | {rss:.1f} |")
        shutil.rmtree(corpus)
        shutil.rmtree(root / f"out{chunks}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
