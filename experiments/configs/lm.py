"""Character-level transformer LM (2 layers, d=128, context 64) with AdamW and cosine decay.

    python -m experiments.main --config=experiments/configs/lm.py --workdir=runs/lm

Runtime: about 2 minutes on 2 CPU cores (~0.1 s/step). Expected: validation loss <= 1.50
nats/char (the workload's target) within the 1,000 steps.
"""

from experiments.configs import common


def get_config():
    config = common.base_config("lm")
    config.steps = 1000
    config.optimizer.kwargs = {"b2": 0.98, "weight_decay": 0.01}
    config.schedule.kwargs = {"peak": 3e-3, "warmup_steps": 50}
    config.eval_every = 100
    config.checkpoint.every = 200
    return config
