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
