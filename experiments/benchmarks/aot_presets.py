"""Per-device memory of the GPT-2-class presets on named TPU slices, compiled on this machine.

    python -m experiments.benchmarks.aot_presets [--presets=gpt2_small,gpt2_medium,lm_1b] \
        [--topologies=v5e:2x4,v4:2x2x1] [--vocab_size=50257] [--config.key=value ...]

For each preset and topology: the step compiled by `experiments.aot` for FSDP over every device
of the slice, with GPT-2's vocabulary (50,257 padded to 50,304). Prints a markdown table (state,
temporaries, the need per device against the device's HBM, and the fit verdict with the first
suggestion when it does not fit). Needs libtpu (`pip install -e '.[tpu]'`, or libtpu on
PYTHONPATH) but no TPU; each compile takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from experiments import aot, devices


def rows(presets, topologies, vocab_size, overrides):
    for topology in topologies:
        tpu = aot.topology_devices(topology)
        spec = devices.spec(tpu[0])
        for name in presets:
            config = importlib.import_module(f"experiments.configs.{name}").get_config()
            config.workload.vocab_size = vocab_size
            for key, value in overrides.items():
                *parents, leaf = key.split(".")
                node = config
                for part in parents:
                    node = node[part]
                node[leaf] = type(node[leaf])(value)
            mesh = {"data": 1, "fsdp": len(tpu)}
            tic = time.perf_counter()
            report = aot.compile_report(config, mesh, tpu)
            fit = aot.check_fit(report, config, spec.hbm_bytes)
            yield {
                "preset": name,
                "topology": f"{topology} ({len(tpu)} x {spec.kind})",
                "batch": config.workload.batch_size,
                "params": report.num_params,
                "report": report,
                "fit": fit,
                "seconds": time.perf_counter() - tic,
            }


def gib(n) -> str:
    return f"{n / 2**30:.2f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="gpt2_small,gpt2_medium,lm_1b")
    parser.add_argument("--topologies", default="v5e:2x4,v4:2x2x1")
    parser.add_argument("--vocab_size", type=int, default=50257)
    parser.add_argument("--config", action="append", default=[], help="key=value override")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.config)
    print(
        "| preset | slice (FSDP over all) | global batch | params | state GiB | temporaries "
        "GiB | need GiB / HBM GiB | fits (margin) | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows(
        args.presets.split(","), args.topologies.split(","), args.vocab_size, overrides
    ):
        report, fit = row["report"], row["fit"]
        verdict = (
            f"yes ({gib(fit.margin_bytes)} GiB)"
            if fit.fits
            else f"no (over by {gib(-fit.margin_bytes)} GiB; {fit.suggestions[-1]})"
        )
        print(
            f"| {row['preset']} | {row['topology']} | {row['batch']} | {row['params']:,} | "
            f"{gib(report.state_bytes)} | {gib(report.temp_bytes)} | "
            f"{gib(fit.need_bytes)} / {gib(fit.hbm_bytes)} | {verdict} | {row['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
