"""Resuming past a corrupt latest checkpoint (issue 17, item 5).

A tiny run is stopped after its step-20 checkpoint (checkpoints 10 and 20 on disk), the
step-20 checkpoint is damaged in one of two ways, and the run is resumed: it must restore
step 10, say that it skipped step 20 and why, keep the damaged files for inspection, and
finish exactly as an uninterrupted run does. When no checkpoint restores it must say so and
list them.
"""

import pathlib
import shutil

import jax
import numpy as np
import pytest

from experiments import checkpointing, train
from tests.test_experiments import quadratic_config

STEPS, STOP = 30, 25  # checkpoints every 10 steps: 10 and 20 exist when the run stops


def _truncate_array_data(step_dir: pathlib.Path) -> None:
    """Cuts every array data file of the checkpoint to half its length (a partial copy)."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble_metadata(step_dir: pathlib.Path) -> None:
    """Overwrites the JSON tree metadata of the optimizer-state item with a cut-off document."""
    (step_dir / "train" / "_METADATA").write_text('{"tree_metadata": {')


DAMAGE = {
    "truncated": (_truncate_array_data, "OUT_OF_RANGE"),
    "corrupt_json": (_garble_metadata, "JSONDecodeError"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and a run stopped at step 25 (to be copied, then damaged)."""
    root = tmp_path_factory.mktemp("fallback")
    whole = train.train(quadratic_config(STEPS), root / "whole")
    train.train(quadratic_config(STEPS), root / "stopped", stop_after=STOP)
    assert checkpointing.Checkpointer(root / "stopped").steps() == [10, 20]
    return whole, root / "stopped"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_to_the_newest_checkpoint_that_restores(runs, tmp_path, capsys, damage):
    whole, stopped = runs
    workdir = tmp_path / "run"
    shutil.copytree(stopped, workdir)
    bad = workdir / checkpointing.CHECKPOINT_DIR / "20"
    corrupt, reason = DAMAGE[damage]
    corrupt(bad)
    damaged_files = {p.relative_to(bad): p.read_bytes() for p in bad.rglob("*") if p.is_file()}
    capsys.readouterr()

    resumed = train.train(quadratic_config(STEPS), workdir)

    origin = resumed["origin"]
    kept = workdir / checkpointing.UNRESTORABLE_DIR / "20"
    assert origin["kind"] == "resume" and origin["step"] == 10
    [skipped] = origin["skipped"]
    assert skipped["step"] == 20 and reason in skipped["error"]
    assert skipped["kept_at"] == str(kept)
    # Said on stderr: which checkpoint, why, where it is kept, and what was restored.
    err = capsys.readouterr().err
    assert f"checkpoint at step 20 in {bad.parent}" in err and reason in err
    assert str(kept) in err and "Restored step 10 instead" in err
    # The damaged checkpoint is kept as it was, out of the way of the new step-20 save.
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == (
        damaged_files
    )
    assert checkpointing.Checkpointer(workdir).steps() == [10, 20, 30]
    # Replaying steps 10..30 from step 10 gives the uninterrupted run, bit for bit.
    assert resumed["step"] == STEPS
    for a, b in zip(
        jax.tree.leaves(whole["state"]), jax.tree.leaves(resumed["state"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_when_no_checkpoint_restores_it_says_so_and_lists_them(runs, tmp_path):
    _, stopped = runs
    workdir = tmp_path / "run"
    shutil.copytree(stopped, workdir)
    _truncate_array_data(workdir / checkpointing.CHECKPOINT_DIR / "20")
    _garble_metadata(workdir / checkpointing.CHECKPOINT_DIR / "10")
    with pytest.raises(checkpointing.CheckpointRestoreError) as raised:
        train.train(quadratic_config(STEPS), workdir)
    message = str(raised.value)
    assert "none of the 2 checkpoints" in message and str(workdir) in message
    assert "step 20: ValueError: OUT_OF_RANGE" in message
    assert "step 10: JSONDecodeError" in message
    # Nothing was moved: the cause might be the config rather than the files.
    assert checkpointing.Checkpointer(workdir).steps() == [10, 20]
    assert not (workdir / checkpointing.UNRESTORABLE_DIR).exists()


def test_params_from_another_run_skip_its_corrupt_latest_without_moving_it(runs, tmp_path):
    whole, stopped = runs
    source = tmp_path / "source"
    shutil.copytree(stopped, source)
    _truncate_array_data(source / checkpointing.CHECKPOINT_DIR / "20")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), whole["state"])
    reader = checkpointing.Checkpointer(source, read_only=True)
    try:
        restored, step, [skipped] = reader.restore_latest(abstract, params_only=True)
    finally:
        reader.close()
    assert step == 10 and skipped["step"] == 20 and set(restored) == {"params"}
    assert skipped["kept_at"] == str(source.absolute() / checkpointing.CHECKPOINT_DIR / "20")
    assert checkpointing.Checkpointer(source, read_only=True).steps() == [10, 20]
