"""The critical-batch-size study on MNIST-1D's CNN (`python -m experiments.batch_size`).

    python -m experiments.batch_size --workdir=runs/batch_size \
        [--config=experiments/configs/batch_size.py --config.rule=sqrt --only=adamw,lamb]

Five optimizers (AdamW, SGD with heavy-ball momentum, LARS, TVLARS, LAMB) at batch sizes 32
to 1024; each learning rate tuned per batch size over the sqrt rule times 1/2, 1, 2 from
a reference learning rate at batch 128 (from a coarse sweep at batch 128 during development,
not recorded; in the study's own tuned grid every optimizer kept that middle value at 128),
linear warm-up over 2,048 examples (TVLARS: none, its trust-ratio factor replaces warm-up),
then constant; no weight decay, so that the optimizers differ only in their
update rule. A run stops at its first evaluation at the target (test accuracy 0.90) or after
`max_examples` examples or `max_steps` steps.

Scale up by config: `--config.experiment.workload.num_samples=...`, a wider `batch_sizes`
list, a finer `grid`, a harder `experiment.workload.target_accuracy`, or another workload
(`--config.experiment=...` is a whole experiment config; its target is the study's target).

Runtime: about 43 minutes on 2 CPU cores shared with other jobs (90 runs; measured
2026-12-01, see BENCHMARKS.md, "Training dynamics").
Expected: every optimizer reaches the target at B = 32 to 512 (TVLARS not at 1024); B_crit
about 150 for AdamW and SGD-momentum, 235 for TVLARS, 430 for LARS, 900 for LAMB, next to a
B_simple at the target of about 90 to 140 (measured: 152, 159, 235, 431, 915 and 122, 96,
101, 87, 141).
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
    experiment = common.base_config("cnn_mnist1d")
    experiment.workload.target_accuracy = 0.90
    experiment.schedule.name = "warmup"  # linear warm-up to `peak`, then constant
    experiment.schedule.kwargs = {"peak": 1e-2, "warmup_steps": 0}  # both set per run
    experiment.progress_bar = False
    experiment.checkpoint.every = 100_000  # only the last step (the run stops there)
    experiment.checkpoint.keep = 1
    # The noise scale of every run, from 4 microbatches (gradient accumulation gives the same
    # update as the whole batch, so the trajectory is that of the batch size).
    experiment.microbatches = 4
    experiment.probes.noise_scale = True

    study = ml_collections.ConfigDict()
    study.experiment = experiment
    study.batch_sizes = [32, 64, 128, 256, 512, 1024]
    study.reference_batch = 128
    study.rule = "tuned"  # "linear", "sqrt", or "tuned": the sqrt rule times each of `grid`
    study.grid = [0.5, 1.0, 2.0]
    study.max_examples = 200_000
    study.max_steps = 2_000
    study.warmup_examples = 2_048
    study.eval_examples = 2_048  # evaluate every max(1, eval_examples // B) steps
    # Per optimizer: the learning rate at `reference_batch` and the optimizer's kwargs.
    study.optimizers = ml_collections.ConfigDict(
        {
            "adamw": {"lr": 3e-2, "warmup": True, "kwargs": {"weight_decay": 0.0}},
            "sgd_momentum": {"lr": 0.1, "warmup": True, "kwargs": {"momentum": 0.9}},
            "lars": {"lr": 10.0, "warmup": True, "kwargs": {"weight_decay": 0.0}},
            "tvlars": {"lr": 10.0, "warmup": False, "kwargs": {"weight_decay": 0.0}},
            "lamb": {"lr": 1e-2, "warmup": True, "kwargs": {"weight_decay": 0.0}},
        }
    )
    return study
