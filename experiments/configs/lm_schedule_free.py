"""Schedule-free AdamW on the LM workload: no decay, evaluated at the averaged point x.

    python -m experiments.main --config=experiments/configs/lm_schedule_free.py \
        --workdir=runs/lm_sf

Runtime: about 2 minutes on 2 CPU cores. Expected: validation loss at x close to the cosine
run of the same budget (`experiments/configs/lm.py`), with no schedule to plan.
"""

from experiments.configs import common


def get_config():
    config = common.base_config("lm")
    config.steps = 1000
    config.optimizer.name = "schedule_free_adamw"
    config.optimizer.kwargs = {"b2": 0.98, "weight_decay": 0.01, "warmup_steps": 50}
    config.schedule.name = "constant"
    config.schedule.kwargs = {"value": 3e-3}
    config.eval_every = 100
    config.checkpoint.every = 200
    return config
