"""Compares regenerated golden files with tests/testdata/ and prints one row per field.

Usage:

    python tools/golden/compare.py NEW_DIR [REFERENCE_DIR] [--rtol 1e-12] [--atol 1e-15] [--write]

For every file in NEW_DIR (written by regenerate.py), every number is compared with the same
place in REFERENCE_DIR (default tests/testdata). A row of the table is one field of one entry:
for example the leaf `p1` of the run `DoG(reps_rel=1e-3)` over all its recorded steps. It
shows the number of values, the largest relative difference |a - b| / max(|a|, |b|) and the
largest absolute difference.

A value agrees when |a - b| <= max(rtol * max(|a|, |b|), atol). The absolute floor (1e-15 by
default) is for fields that are differences of O(1) numbers, such as loss - f* or a relative
suboptimality near 1e-16: there one ulp of the operands is a large relative change. Integers
and strings must be equal, NaN matches NaN, and the structure (keys, list lengths) must match.

Entries that regenerate.py could not make (MANIFEST.json says why) are listed, not failed.
Exits 1 if anything disagrees, unless --write is given: then the regenerated entries are
written into REFERENCE_DIR (entries that were not regenerated keep their recorded values) in
the files' own formats, and it exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def entries(obj) -> list[tuple[str, object]]:
    """The top-level entries of a golden file: dict items, or the named runs of a list."""
    if isinstance(obj, dict):
        return list(obj.items())
    return [(item["name"], item) for item in obj]


def _is_number_key(key: str) -> bool:
    try:
        float(key)
    except ValueError:
        return False
    return True


def leaves(obj, path=()):
    """(field, value) for every leaf; list indices and numeric keys do not name the field."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, path if _is_number_key(key) else (*path, key))
    elif isinstance(obj, list):
        for value in obj:
            yield from leaves(value, path)
    else:
        yield "/".join(path) or "(value)", obj


def structure(obj):
    """The shape of a JSON value with every scalar replaced by its kind."""
    if isinstance(obj, dict):
        return {k: structure(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [structure(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return type(obj).__name__
    return "number"


class Row:
    def __init__(self, file, entry, field):
        self.file, self.entry, self.field = file, entry, field
        self.count = 0
        self.rel = 0.0
        self.abs = 0.0
        self.ok = True
        self.note = ""


def compare_values(row: Row, new, old, rtol: float, atol: float) -> None:
    row.count += 1
    if isinstance(new, float) or isinstance(old, float):
        if not isinstance(new, int | float) or not isinstance(old, int | float):
            row.ok, row.note = False, "type differs"
            return
        if math.isnan(new) or math.isnan(old):
            if not (math.isnan(new) and math.isnan(old)):
                row.ok, row.note = False, "NaN on one side"
                row.rel = row.abs = math.inf
            return
        diff = abs(new - old)
        scale = max(abs(new), abs(old))
        rel = diff / scale if scale > 0 else 0.0
        row.rel, row.abs = max(row.rel, rel), max(row.abs, diff)
        if diff > max(rtol * scale, atol):
            row.ok = False
    elif new != old:
        row.ok, row.note = False, f"{new!r} != {old!r}"
        if isinstance(new, int) and isinstance(old, int):
            row.abs = max(row.abs, abs(new - old))
            row.rel = max(row.rel, abs(new - old) / max(abs(new), abs(old)))


def compare_file(name: str, new, old, rtol: float, atol: float) -> list[Row]:
    rows = []
    old_entries = dict(entries(old))
    for entry, value in entries(new):
        if entry not in old_entries:
            row = Row(name, entry, "(entry)")
            row.ok, row.note = False, "not in the recorded file"
            rows.append(row)
            continue
        recorded = old_entries[entry]
        if structure(value) != structure(recorded):
            row = Row(name, entry, "(structure)")
            row.ok, row.note = False, "keys, lengths or kinds differ"
            rows.append(row)
            continue
        by_field: dict[str, Row] = {}
        for (field, a), (_, b) in zip(leaves(value), leaves(recorded), strict=True):
            row = by_field.setdefault(field, Row(name, entry, field))
            compare_values(row, a, b, rtol, atol)
        rows.extend(by_field.values())
    return rows


def merge(new, old):
    """The recorded file with every regenerated entry replaced, in the recorded order."""
    fresh = dict(entries(new))
    if isinstance(old, dict):
        return {key: fresh.get(key, value) for key, value in old.items()}
    return [fresh.get(item["name"], item) for item in old]


def write_like(path: pathlib.Path, obj) -> None:
    """Writes JSON the way the recorded file is written: indent 1, or one line."""
    text = path.read_text()
    compact = not text.startswith(("{\n", "[\n"))
    path.write_text(json.dumps(obj) if compact else json.dumps(obj, indent=1))


def format_number(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=pathlib.Path, help="directory written by regenerate.py")
    parser.add_argument(
        "reference", type=pathlib.Path, nargs="?", default=ROOT / "tests" / "testdata"
    )
    parser.add_argument("--rtol", type=float, default=1e-12)
    parser.add_argument("--atol", type=float, default=1e-15)
    parser.add_argument(
        "--write", action="store_true", help="overwrite the reference files with the new values"
    )
    args = parser.parse_args(argv)

    manifest_path = args.new / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    status = manifest.get("files", {})

    rows: list[Row] = []
    skipped: list[tuple[str, str, str]] = []
    written = {}
    for path in sorted(args.reference.glob("*.json")):
        name = path.name
        old = json.loads(path.read_text())
        new_path = args.new / name
        if not new_path.exists():
            reason = status.get(name, {}).get("reason", "not produced by regenerate.py")
            skipped.append((name, "(whole file)", reason))
            continue
        new = json.loads(new_path.read_text())
        rows.extend(compare_file(name, new, old, args.rtol, args.atol))
        fresh = dict(entries(new))
        for entry, _ in entries(old):
            if entry not in fresh:
                reason = status.get(name, {}).get("not_regenerated", {}).get(entry, "not made")
                skipped.append((name, entry, reason))
        written[name] = (path, merge(new, old))

    headers = ("file", "entry", "field", "n", "max rel diff", "max abs diff", "")
    table = [
        (
            r.file,
            r.entry,
            r.field,
            str(r.count),
            format_number(r.rel),
            format_number(r.abs),
            "ok" if r.ok else f"DIFFERS {r.note}".rstrip(),
        )
        for r in rows
    ]
    widths = [max([len(h), *(len(t[i]) for t in table)]) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for t in table:
        print(line.format(*t))
    if skipped:
        print("\nnot regenerated:")
        for name, entry, reason in skipped:
            print(f"  {name} {entry}: {reason}")
    bad = [r for r in rows if not r.ok]
    print(
        f"\n{len(rows)} fields compared, {len(bad)} differ beyond rtol {args.rtol:g} "
        f"(atol {args.atol:g}); {len(skipped)} entries not regenerated"
    )
    if args.write:
        for path, obj in written.values():
            write_like(path, obj)
        print(f"wrote {len(written)} files into {args.reference}")
        return 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
