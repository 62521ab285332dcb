"""A run's metrics on disk: writing them as training goes, reading them back for reports.

Every record is one JSON line in `<workdir>/metrics.jsonl` with a `split` ("train" or
"eval") and a `step`: the number of updates applied when the record was taken, for both
splits, so a train record and an eval record of the same step describe the same params. The
same scalars go to TensorBoard under `<workdir>/tb/<split>/<key>` when tensorboardX is
installed. A progress bar (tqdm) shows the loss on the terminal.

Example:
  >>> import tempfile
  >>> from experiments import metrics
  >>> workdir = tempfile.mkdtemp()
  >>> with metrics.Writer(workdir, tensorboard=False) as writer:
  ...     writer.write({"split": "train", "step": 1, "loss": 2.5})
  >>> metrics.read_metrics(workdir)
  [{'split': 'train', 'step': 1, 'loss': 2.5}]
"""

from __future__ import annotations

import json
import pathlib
import sys

METRICS_FILE = "metrics.jsonl"


class Writer:
    """Appends records to `metrics.jsonl` and TensorBoard; does nothing when not `enabled`.

    Only the main process of a multi-process run writes (`enabled=False` elsewhere).
    """

    def __init__(self, workdir: str | pathlib.Path, enabled: bool = True, tensorboard=True):
        workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self.file = open(workdir / METRICS_FILE, "a") if enabled else None  # noqa: SIM115
        self.tb = None
        if enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tb"))
            except ImportError:  # TensorBoard events are optional; the JSONL is the record
                pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, float) and key != "step":
                    self.tb.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """The records of `metrics.jsonl` by (split, step), the last written winning.

    A run resumed after a crash repeats the steps after its last checkpoint; the repeat is
    what the final model saw, so it replaces the earlier records.
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[(record["split"], record["step"])] = record
    return sorted(records.values(), key=lambda r: (r["step"], r["split"]))


def progress(start: int, total: int, enabled: bool):
    """A tqdm bar from `start` to `total` on stderr, or a silent stand-in."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            enabled = False
    if not enabled:
        return _NoProgress()
    return tqdm(initial=start, total=total, dynamic_ncols=True, file=sys.stderr)


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


# The fields of a train record that measure wall-clock time: they differ between two runs that
# are otherwise bit-identical (a resumed run and an uninterrupted one).
TIMING_KEYS = ("seconds", "examples_per_second", "tokens_per_second", "mfu")


class Throughput:
    """Examples/s, tokens/s and model FLOPs utilisation over the steps since the last record.

    Model FLOPs per step come two ways, both recorded: XLA's cost analysis of the compiled
    step (`xla_flops_per_step`, summed over the devices; XLA counts a scanned loop's body
    once, so it undercounts `nn.scan`-stacked models) and the workload's own formula where it
    has one (`model_flops_per_step`: the LM's 6N + attention per token, Kaplan et al. 2020;
    PaLM App. B). MFU divides the formula's FLOP/s (else XLA's) by the devices' peak from
    `experiments.devices`; where the peak is unknown (CPU) `mfu` is None: not available,
    never a made-up number.
    """

    def __init__(self, workload, devices, xla_flops_per_step: float | None, lanes: int = 1):
        from experiments import devices as device_table

        tokens = getattr(workload, "tokens_per_example", None)
        self.tokens_per_example = tokens() if callable(tokens) else tokens
        self.examples_per_step = workload.examples_per_step() * lanes
        formula = getattr(workload, "flops_per_token", None)
        self.model_flops_per_step = None
        if formula is not None and self.tokens_per_example:
            self.model_flops_per_step = formula() * self.tokens_per_example * self.examples_per_step
        self.xla_flops_per_step = xla_flops_per_step
        peaks = [device_table.peak_flops(d) for d in devices]
        self.peak = None if not peaks or any(p is None for p in peaks) else float(sum(peaks))

    def record(self, steps: int, seconds: float) -> dict:
        """The throughput fields of a train record for `steps` steps in `seconds`.

        Rates are None when no step has been timed yet (the first step's time is compile).
        """
        per_second = steps / seconds if seconds > 0 and steps > 0 else None
        rate = lambda per_step: None if per_second is None else per_step * per_second
        out = {"examples_per_second": rate(self.examples_per_step)}
        if self.tokens_per_example:
            out["tokens_per_second"] = rate(self.examples_per_step * self.tokens_per_example)
        if self.model_flops_per_step is not None:
            out["model_flops_per_step"] = float(self.model_flops_per_step)
        if self.xla_flops_per_step is not None:
            out["xla_flops_per_step"] = float(self.xla_flops_per_step)
        flops = self.model_flops_per_step or self.xla_flops_per_step
        out["mfu"] = None if self.peak is None or flops is None else rate(flops / self.peak)
        return out
