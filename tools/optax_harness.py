"""Runs optax's own optimizer tests on optlib's optimizers, next to optax's (issue 20).

    python tools/optax_harness.py [--only lamb,dog] [-n 2]      # or: make optax-harness

optax ships its test files inside the installed package. This script reads two of them from
the installed optax, `_src/alias_test.py` (class `AliasTest`: convergence on a parabola and
Rosenbrock in float32 and complex64 with no recompile, `tree.map_params`, extra keyword
arguments, `inject_hyperparams` equality, dtype preservation, state shape/dtype stability
through a `lax.cond` from float16 to complex128, `MultiSteps`) and
`schedules/_schedule_test.py` (class `ScheduleAsLearningRateTest`: a constant schedule gives
the float's trajectory, skipped unless `learning_rate` is annotated as a schedule). It writes
copies into a temporary directory with three substitutions, and runs them there with pytest:

* the list of optimizers under test becomes `CASES` below: each optlib optimizer, and as
  baselines the optax optimizers of the same name (`optax.lamb`, `optax.lars`) plus adamw;
* the factory lookup `getattr(alias, name)` finds optlib's optimizers by their `optlib_` name;
* the updates that pass `value=` to `polyak_sgd` pass it to MoMo and MoMo-Adam too (their
  update needs the loss, as polyak_sgd's does). Nothing else of optax's tests changes.

Nothing is copied into this repository: the tests are read from the installed optax at run
time. The summary gives passed/failed/skipped per optimizer and the skip reasons, so "no extra
skips" can be read off against optax's own rows. SAM is not in the list: its update needs
`grad_fn=`, which no optax harness passes (the contract table covers it). Prospect needs an
example index and tables.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# (name in the harness, factory kwargs). "optlib_x" is optlib.x; other names are optax's.
CASES = (
    ("optlib_lamb", {"learning_rate": 1e-3}),
    ("optlib_lars", {"learning_rate": 1.0}),
    ("optlib_tvlars", {"learning_rate": 1.0}),
    ("optlib_dog", {"learning_rate": 1.0}),
    ("optlib_ldog", {"learning_rate": 1.0}),
    ("optlib_momo", {"learning_rate": 1.0}),
    ("optlib_momo_adam", {"learning_rate": 1e-1}),
    ("optlib_schedule_free_sgd", {"learning_rate": 1e-2}),
    ("optlib_schedule_free_adamw", {"learning_rate": 1e-1}),
    ("optlib_sgd_hd", {"learning_rate": 1e-3}),
    ("optlib_adam_hd", {"learning_rate": 1e-1}),
    ("lamb", {"learning_rate": 1e-3}),
    ("lars", {"learning_rate": 1.0}),
    ("adamw", {"learning_rate": 1e-1}),
)
NEEDS_VALUE = ("polyak_sgd", "optlib_momo", "optlib_momo_adam")

PRELUDE = """
import optlib as _optlib

_CASES = {cases!r}
_NEEDS_VALUE = {needs_value!r}


def _factory(name):
    if name.startswith("optlib_"):
        return getattr(_optlib, name[len("optlib_"):])
    return getattr(alias, name)
"""


def _optimizer_list(cases) -> str:
    rows = ",\n".join(f"    {{'opt_name': {n!r}, 'opt_kwargs': {k!r}}}" for n, k in cases)
    return f"(\n{rows},\n)"


def patch_alias_test(source: str, cases) -> str:
    """optax's alias_test.py with our optimizer list, lookup and value= rule."""
    start = source.index("_OPTIMIZERS_UNDER_TEST = (")
    end = source.index("\n)\n", start) + 3
    source = source[:start] + f"_OPTIMIZERS_UNDER_TEST = {_optimizer_list(cases)}\n" + source[end:]
    source = source.replace("return getattr(alias, opt_name)", "return _factory(opt_name)")
    source, count = re.subn(
        r"opt_name (?:== 'polyak_sgd'|in \['polyak_sgd'\])", "opt_name in _NEEDS_VALUE", source
    )
    if count < 4:
        raise SystemExit(f"optax's alias_test changed shape ({count} value= sites); update me")
    marker = "\n\n##############\n# COMMON TESTS"
    prelude = PRELUDE.format(cases=cases, needs_value=NEEDS_VALUE)
    return source.replace(marker, prelude + marker, 1)


def schedule_test(source: str) -> str:
    """optax's ScheduleAsLearningRateTest, reading the patched alias_test and our factories."""
    start = source.index("class ScheduleAsLearningRateTest")
    end = source.find("\nclass ", start + 1)
    body = source[start : end if end > 0 else len(source)]
    body = body.split("\nif __name__")[0]
    body = body.replace("getattr(alias, opt_name)", "alias_test._factory(opt_name)")
    body = body.replace("opt_name == 'polyak_sgd'", "opt_name in alias_test._NEEDS_VALUE")
    imports = source[: source.index("\nclass ")]
    imports = imports.replace("from optax._src import alias_test", "import alias_test")
    return imports + "\n\n" + body


def summarize(junit: pathlib.Path) -> tuple[collections.Counter, list[str]]:
    """Passed/failed/skipped counts and the skip reasons of one run's junit file."""
    counts: collections.Counter = collections.Counter()
    reasons = set()
    for case in ET.parse(junit).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
        elif (skip := case.find("skipped")) is not None:
            counts["skipped"] += 1
            reasons.add((skip.get("message") or "").strip()[:90])
        else:
            counts["passed"] += 1
    return counts, sorted(reasons)


def run_case(case, root: pathlib.Path, workers: str) -> tuple[collections.Counter, list, list]:
    """optax's two test classes on one optimizer: counts, skip reasons, failed test ids."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "alias_test.py").write_text(
            patch_alias_test((root / "_src" / "alias_test.py").read_text(), (case,))
        )
        (tmp / "schedule_lr_test.py").write_text(
            schedule_test((root / "schedules" / "_schedule_test.py").read_text())
        )
        junit = tmp / "junit.xml"
        # test_explicit_dtype tests optax's sgd/adam/adamw only, whatever the list says.
        selected = "(AliasTest and not explicit_dtype) or ScheduleAsLearningRateTest"
        command = [
            sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-n", workers,
            f"--junitxml={junit}", "-k", selected, "alias_test.py", "schedule_lr_test.py",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        if not junit.exists():
            raise SystemExit(f"{case[0]}: pytest did not run\n{result.stdout[-3000:]}")
        counts, reasons = summarize(junit)
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        return counts, reasons, failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names to keep (lamb, dog)")
    parser.add_argument("-n", default="0", help="pytest-xdist workers per optimizer")
    args = parser.parse_args(argv)
    import optax

    root = pathlib.Path(optax.__file__).parent
    cases = CASES
    if args.only:
        keep = set(args.only.split(","))
        cases = tuple(c for c in CASES if c[0] in keep or c[0].removeprefix("optlib_") in keep)
    print(f"optax {optax.__version__}: AliasTest (less test_explicit_dtype) and "
          "ScheduleAsLearningRateTest, one run per optimizer")  # fmt: skip
    print(f"{'optimizer':<28} passed failed skipped  skip reasons")
    any_failed = False
    for case in cases:
        counts, reasons, failed = run_case(case, root, args.n)
        any_failed |= bool(counts["failed"])
        print(
            f"{case[0]:<28} {counts['passed']:>6} {counts['failed']:>6} {counts['skipped']:>7}"
            f"  {'; '.join(reasons)}",
            flush=True,
        )
        for line in failed[:10]:
            print(f"    {line}")
    return int(any_failed)


if __name__ == "__main__":
    raise SystemExit(main())
