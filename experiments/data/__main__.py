"""Command line of `experiments.data`.

    python -m experiments.data prepare --input 'corpus/**/*.txt' --out data/mycorpus \
        [--tokenizer bytes | sentencepiece:PATH.model | hf:PATH/tokenizer.json] \
        [--val_fraction 0.005] [--text_field text] [--overwrite] [--no_progress]
    python -m experiments.data check data/mycorpus
"""

from __future__ import annotations

import argparse
import json
import sys

from experiments.data import _manifest as manifest_lib
from experiments.data import _prepare as prepare_lib


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m experiments.data", description=__doc__.split("\n")[0]
    )
    commands = top.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="tokenise text / JSONL into a prepared corpus")
    prep.add_argument(
        "--input",
        action="append",
        required=True,
        help="a file or glob (quote it; ** recurses); repeat for several. Names ending "
        ".jsonl (or .jsonl.gz) are JSONL, everything else plain text (.gz is decompressed)",
    )
    prep.add_argument("--out", required=True, help="the output directory (must not exist)")
    prep.add_argument(
        "--tokenizer",
        default="bytes",
        help="bytes (default, vocabulary 256), sentencepiece:PATH.model or hf:PATH/tokenizer.json",
    )
    prep.add_argument(
        "--val_fraction",
        type=float,
        default=0.005,
        help="share of the tokens (the last ones) held out for validation (default 0.005)",
    )
    prep.add_argument("--text_field", default="text", help="JSONL key holding the text")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    prep.add_argument("--no_progress", action="store_true", help="no progress bar")
    check = commands.add_parser("check", help="verify a prepared corpus against its manifest")
    check.add_argument("directory")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "prepare":
            prepare_lib.prepare(
                args.input,
                args.out,
                tokenizer=args.tokenizer,
                val_fraction=args.val_fraction,
                text_field=args.text_field,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
        else:
            manifest = manifest_lib.load(args.directory)
            splits = {k: v["tokens"] for k, v in manifest["splits"].items()}
            print(json.dumps({"ok": True, "vocab_size": manifest["vocab_size"], **splits}))
    except manifest_lib.CorpusError as e:
        print(f"experiments.data {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
