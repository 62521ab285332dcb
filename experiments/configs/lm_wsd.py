"""The main branch of a WSD run on the LM workload: warm-up, then a constant learning rate.

Branch decays off it (each a finished model for its budget) with

    python -m experiments.branch --config=experiments/configs/lm_wsd.py --parent=runs/lm_wsd \
        --at=240,480,800 --decay_fraction=0.2 --shape=1-sqrt

Runtime: about 2 minutes on 2 CPU cores for the main branch to step 800 and its three decays.
Expected: each branch ends near the validation loss of a cosine run of the same budget
(`experiments/configs/lm.py` with --config.steps=300/600/1000); see `make run`.
"""

from experiments.configs import common


def get_config():
    config = common.base_config("lm")
    config.steps = 800
    config.optimizer.kwargs = {"b2": 0.98, "weight_decay": 0.01}
    config.schedule.name = "warmup"
    config.schedule.kwargs = {"peak": 3e-3, "warmup_steps": 50}
    config.eval_every = 100
    config.checkpoint.every = 200
    return config
