"""An ill-conditioned quadratic (d=100, condition number 1e3) with noisy gradients; SGD + cosine.

    python -m experiments.main --config=experiments/configs/quadratic.py --workdir=runs/quadratic

Runtime: about 10 s on 2 CPU cores. Expected: eval_loss falls from 6.4 below the 1e-3 target
by about step 1000 (measured: eval_loss 1.2e-4 at step 3000, target 1e-3, 2026-11-24).
"""

from experiments.configs import common


def get_config():
    config = common.base_config("quadratic")
    config.steps = 3000
    config.optimizer.name = "sgd"
    config.optimizer.kwargs = {}
    config.schedule.kwargs = {"peak": 1.0, "warmup_steps": 50}
    config.eval_every = 100
    config.checkpoint.every = 500
    return config
