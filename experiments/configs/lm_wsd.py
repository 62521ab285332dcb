"""The main branch of a WSD run on the LM workload: warm-up, then a constant learning rate.

Branch decays off it (each a finished model for its budget) with

    python -m experiments.branch --config=experiments/configs/lm_wsd.py --parent=runs/lm_wsd \
        --at=240,480,800 --decay_fraction=0.2 --shape=1-sqrt

Runtime: about 2 minutes on 2 CPU cores for the main branch to step 800 and its three decays.
Expected: each branch ends near the validation loss of a cosine run of the same budget
(`experiments/configs/lm.py` with --config.steps=300/600/1000); see `make run`.
"""

from experiments.configs import lm


def get_config():
    """`lm.get_config()` with its cosine replaced by warm-up then the same peak, held."""
    config = lm.get_config()
    config.steps = 800
    config.schedule.name = "warmup"  # same kwargs as lm's cosine: peak, warmup_steps
    return config
