"""GPT-2 medium: 24 layers, d_model 1024, 16 heads, context 1024; WSD main branch on your corpus.

    python -m experiments.main --config=experiments/configs/gpt2_medium.py \
        --workdir=runs/gpt2_medium --config.workload.data=data/mycorpus

Parameters: 354,797,568 with GPT-2's vocabulary (50,257 padded to 50,304; tied embeddings),
303,548,416 with the byte tokenizer. Setting as in gpt2_small.py, with each block's activations
recomputed whole (remat "block") and peak learning rate 3e-4 (GPT-3's for this size). Memory
per device from `python -m experiments.aot --config=experiments/configs/gpt2_medium.py
--mesh=data:1,fsdp:8 --topology=v5e:2x4 --config.workload.vocab_size=50257`: v5e-8 6.84 GiB of
16 (state 0.50, temporaries 6.32), fits with 7.56 GiB to spare; v4-8 (`--mesh=data:1,fsdp:4
--topology=v4:2x2x1`) 13.54 GiB of 32.

Runtime: not run here (no TPU). The 6N + attention formula gives 2.4e9 FLOPs per token: the
10,000 steps of 131,072 tokens cost 3.2e18 FLOPs, about 1.4 hours on a v5e-8 at 40% MFU.
Expected: depends on the corpus.
"""

from experiments.configs.gpt2_small import gpt_config


def get_config():
    return gpt_config(
        d_model=1024, num_heads=16, num_layers=24, batch_size=128, peak_lr=3e-4, remat="block"
    )
