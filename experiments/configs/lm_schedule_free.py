"""Schedule-free AdamW on the LM workload: no decay, evaluated at the averaged point x.

    python -m experiments.main --config=experiments/configs/lm_schedule_free.py \
        --workdir=runs/lm_sf

Runtime: about 2 minutes on 2 CPU cores. Expected: validation loss at x close to the cosine
run of the same budget (`experiments/configs/lm.py`), with no schedule to plan.
"""

from experiments.configs import lm


def get_config():
    """`lm.get_config()` with schedule-free AdamW at lm's peak, warmed up as lm warms up."""
    config = lm.get_config()
    schedule = config.schedule.kwargs
    config.optimizer.name = "schedule_free_adamw"
    config.optimizer.kwargs = {**config.optimizer.kwargs, "warmup_steps": schedule.warmup_steps}
    config.schedule.name = "constant"
    config.schedule.kwargs = {"value": schedule.peak}
    return config
