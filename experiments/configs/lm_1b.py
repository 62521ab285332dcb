"""A 1B-parameter LM: 18 layers, d_model 2048, 16 heads, context 1024; WSD main branch.

    python -m experiments.main --config=experiments/configs/lm_1b.py \
        --workdir=runs/lm_1b --config.workload.data=data/mycorpus

Parameters: 1,011,462,144 with GPT-2's vocabulary (50,257 padded to 50,304; tied embeddings),
908,963,840 with the byte tokenizer. Setting as in gpt2_small.py, with each block's activations
recomputed whole (remat "block") and peak learning rate 2e-4 (GPT-3's for 1.3B). Memory per
device from `python -m experiments.aot --config=experiments/configs/lm_1b.py --mesh=data:1,fsdp:8
--topology=v5e:2x4 --config.workload.vocab_size=50257`: v5e-8 8.86 GiB of 16 (state 1.41,
temporaries 7.41), fits with 5.54 GiB to spare; v4-8 (`--mesh=data:1,fsdp:4
--topology=v4:2x2x1`) 17.34 GiB of 32.

Runtime: not run here (no TPU). The 6N + attention formula gives 6.5e9 FLOPs per token: the
10,000 steps of 131,072 tokens cost 8.5e18 FLOPs, about 3.8 hours on a v5e-8 at 40% MFU.
Expected: depends on the corpus.
"""

from experiments.configs.gpt2_small import gpt_config


def get_config():
    return gpt_config(
        d_model=2048, num_heads=16, num_layers=18, batch_size=128, peak_lr=2e-4, remat="block"
    )
