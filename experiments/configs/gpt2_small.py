"""GPT-2 small: 12 layers, d_model 768, 12 heads, context 1024; WSD main branch on your corpus.

    python -m experiments.data prepare --input 'corpus/**/*.txt' --out data/mycorpus
    python -m experiments.main --config=experiments/configs/gpt2_small.py \
        --workdir=runs/gpt2_small --config.workload.data=data/mycorpus
    python -m experiments.branch --config=experiments/configs/gpt2_small.py \
        --parent=runs/gpt2_small --at=2000,5000,10000 --decay_fraction=0.2 \
        --config.workload.data=data/mycorpus

Parameters: 124,448,256 with GPT-2's vocabulary (50,257 padded to 50,304; tied embeddings),
86,011,392 with the byte tokenizer (vocabulary 256). Memory per device, from `python -m
experiments.aot --config=experiments/configs/gpt2_small.py --mesh=data:1,fsdp:8
--topology=v5e:2x4 --config.workload.vocab_size=50257` (libtpu 0.0.42.1, compiled on a CPU
machine): v5e-8 (FSDP over 8 chips) 10.00 GiB of 16 (state 0.17 GiB, temporaries 9.80 GiB),
fits with 4.40 GiB to spare after a 10% reserve; v4-8 (`--topology=v4:2x2x1`, 4 chips) 19.88
GiB of 32. At batch 256 it needs 20.1 GiB on a v5e-8 and does not fit (see BENCHMARKS.md).

Shared setting of the GPT-2-class presets (also gpt2_medium, lm_1b): pre-LN decoder with learned
positions, tied embeddings, the vocabulary padded to a multiple of 128, layers stacked with
nn.scan, each block rematerialised keeping only its matmul outputs ("dots"), bf16 compute with
float32 parameters and optimizer state; AdamW (b2 = 0.95, weight decay 0.1) with warm-up then a
constant learning rate (the main branch of a WSD run: decays come from `experiments.branch`),
FSDP over every device. Without `--config.workload.data` the pydoc character text stands in
(a smoke test only).

Runtime: not run here (no TPU). The 6N + attention formula gives 8.55e8 FLOPs per token, so the
10,000 steps of 131,072 tokens (1.3e9 tokens) cost 1.1e18 FLOPs: about 30 minutes on a v5e-8
(8 x 197 bf16 TFLOP/s) at 40% MFU. On this shared 2-core CPU one full-size step at batch 1
took 119 s (9 tokens/s; BENCHMARKS.md). Expected: depends on the corpus; the
workload's target (validation loss <= 1.50) is the pydoc char LM's and means little here.
"""

from experiments.configs import common


def gpt_config(
    d_model: int,
    num_heads: int,
    num_layers: int,
    batch_size: int,
    peak_lr: float,
    remat: str = "dots",
):
    """The GPT-2-class preset setting (see the module docstring) at one model size."""
    config = common.base_config("lm")
    config.workload.update(
        batch_size=batch_size,
        context=1024,
        d_model=d_model,
        num_heads=num_heads,
        num_layers=num_layers,
        mlp_ratio=4,
        vocab_multiple=128,
        tie_embeddings=True,
        scan_layers=True,
        remat=remat,
        compute_dtype="bfloat16",
        param_dtype="float32",
        eval_windows=256,
        eval_batch_size=8,
    )
    config.steps = 10_000
    config.optimizer.kwargs = {"b1": 0.9, "b2": 0.95, "weight_decay": 0.1}
    config.schedule.name = "warmup"  # WSD main branch; decays come from experiments.branch
    config.schedule.kwargs = {"peak": peak_lr, "warmup_steps": 500}
    config.mesh.data, config.mesh.fsdp = 1, -1
    config.log_every = 50
    config.eval_every = 1000
    config.checkpoint.every = 1000
    return config


def get_config():
    return gpt_config(d_model=768, num_heads=12, num_layers=12, batch_size=128, peak_lr=6e-4)
