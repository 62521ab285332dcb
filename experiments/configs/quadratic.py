"""An ill-conditioned quadratic with noisy gradients: the quickest end-to-end check.

    python -m experiments.main --config=experiments/configs/quadratic.py --workdir=runs/quadratic

Runtime: a few seconds on 2 CPU cores. Expected: eval_loss falls from about 0.45 to below the
workload's target within the 500 steps (AdamW, cosine from 0.1).
"""

from experiments.configs import common


def get_config():
    config = common.base_config("quadratic")
    config.steps = 500
    config.schedule.kwargs.peak = 0.1
    config.eval_every = 100
    return config
