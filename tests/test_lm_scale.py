"""The LM at scale: training on prepared token files (determinism, resume), the scan-stacked
model against the unstacked one (and LAMB's per-layer trust ratios on it), the precision policy,
vocabulary padding, tied embeddings, and the GPT-2-class presets (parameter count, a compiled
step on 8 CPU devices, one real step of a reduced-depth variant)."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib
from experiments import aot, checkpointing, data, metrics, train, workloads
from experiments.configs import common, gpt2_small
from experiments.data import __main__ as data_cli
from experiments.workloads import lm
from tests.test_data import write_corpus

STEPS = 20


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same prepare command run twice (into two directories)."""
    root = write_corpus(tmp_path_factory.mktemp("text"), lines=400)
    outs = []
    for name in ("one", "two"):
        out = root.parent / name
        argv = ["prepare", "--input", str(root / "**" / "*.txt"), "--out", str(out)]
        assert data_cli.main([*argv, "--val_fraction", "0.05", "--no_progress"]) == 0
        outs.append(out)
    return outs


def token_config(data_dir, steps=STEPS, mesh=(4, 2)):
    config = common.base_config("lm")
    config.workload.update(
        data=str(data_dir),
        batch_size=16,
        context=32,
        d_model=32,
        num_heads=2,
        num_layers=1,
        eval_windows=16,
        tie_embeddings=True,  # logits start near 0: the first loss is log(256)
    )
    config.steps = steps
    config.log_every = 1
    config.eval_every = 0  # only the final eval: one compile less in the killed run
    config.checkpoint.every = 10
    config.progress_bar = False
    config.optimizer.kwargs = {"weight_decay": 0.0}
    config.schedule.kwargs = {"peak": 1e-2, "warmup_steps": 3}
    config.mesh.data, config.mesh.fsdp = mesh
    return config


def losses(workdir) -> list[float]:
    return [r["loss"] for r in metrics.read_metrics(workdir) if r["split"] == "train"]


def test_prepare_then_train_is_deterministic_and_resumes_exactly(corpora, tmp_path):
    # The same prepare command twice: identical files. A run on each copy, the second killed
    # after step 15 and resumed from its step-10 checkpoint: identical losses and final state.
    one, two = corpora
    for name in ("manifest.json", "train.bin", "val.bin"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    # Resumption is exact on any mesh; data x fsdp = 1 x 2 compiles far faster than 4 x 2.
    two_devices, mesh = jax.devices()[:2], (1, 2)
    first = train.train(
        token_config(one, mesh=mesh), tmp_path / "first", return_state=True, devices=two_devices
    )
    curve = losses(tmp_path / "first")
    assert len(curve) == STEPS
    assert curve[0] == pytest.approx(math.log(256), abs=0.1)  # a fresh byte-level model
    assert max(curve[-3:]) < curve[0] - 1.5  # and it learns
    assert first["eval"]["eval_loss"] < curve[0] - 1.5

    train.train(
        token_config(two, mesh=mesh), tmp_path / "killed", stop_after=15, devices=two_devices
    )
    assert losses(tmp_path / "killed") == curve[:15]
    assert checkpointing.Checkpointer(tmp_path / "killed").latest_step() == 10
    resumed = train.train(
        token_config(two, mesh=mesh), tmp_path / "killed", return_state=True, devices=two_devices
    )
    assert resumed["origin"] == {"kind": "resume", "step": 10}
    chex.assert_trees_all_equal(first["state"], resumed["state"])
    assert losses(tmp_path / "killed") == curve
    assert resumed["eval"] == first["eval"]


def test_token_workload_reads_rows_and_checks_its_corpus(corpora, tmp_path):
    (one, _) = corpora
    config = token_config(one).workload
    workload = workloads.make(config)
    assert workload.vocab_size == workload.padded_vocab_size == 256
    whole = workload.batch(3)["tokens"]
    assert whole.shape == (16, 33) and whole.dtype == np.int32
    np.testing.assert_array_equal(workload.batch_rows(3, np.array([2, 9]))["tokens"], whole[[2, 9]])
    assert workload.eval_batch()["tokens"].shape == (16, 33)

    n_val = data.read(one)["splits"]["val"]["tokens"]
    config.context = n_val
    with pytest.raises(ValueError, match=f"longer than the val split {one / 'val.bin'}"):
        workloads.make(config)
    config.context = 32
    config.vocab_size = 100
    with pytest.raises(ValueError, match=f"'vocab_size' \\(100\\) is smaller .* of {one}"):
        workloads.make(config)
    config.vocab_size = 0
    config.data = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="missing does not exist"):
        workloads.make(config)


def test_bad_model_options_name_the_key():
    for key, value in (
        ("remat", "everything"),
        ("compute_dtype", "float16"),
        ("scan_layers", "yes"),
        ("tie_embeddings", 1),
        ("vocab_multiple", 0),
        ("eval_batch_size", -1),
        ("data", 3),
    ):
        values = {**lm.default_config().to_dict(), key: value}
        with pytest.raises(ValueError, match=f"'{key}'"):
            lm.CharLM(values)


# --- the model ---------------------------------------------------------------------------------

SMALL = dict(vocab_size=40, context=8, d_model=16, num_heads=2, num_layers=3, mlp_ratio=2)


@pytest.fixture(scope="module")
def small():
    """An unstacked 3-layer model, its params and a batch of tokens."""
    model = lm.Transformer(**SMALL)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 8), 0, 40)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"]
    return model, params, tokens


def loss_of(model):
    return jax.jit(lambda p, tokens: jnp.mean(model.apply({"params": p}, tokens) ** 2))


def test_scan_stacked_model_equals_the_unstacked_one(small):
    model, params, tokens = small
    stacked = lm.stack_layers(params, SMALL["num_layers"])
    assert stacked["layers"]["Dense_0"]["kernel"].shape == (3, 16, 48)
    want = jax.jit(model.apply)({"params": params}, tokens)
    for remat in ("none", "block", "dots"):
        scanned = lm.Transformer(**SMALL, scan_layers=True, remat=remat)
        # The scanned model's own init has exactly this structure and these shapes.
        chex.assert_trees_all_equal_shapes_and_dtypes(
            jax.eval_shape(scanned.init, jax.random.PRNGKey(0), tokens)["params"], stacked
        )
        got = jax.jit(scanned.apply)({"params": stacked}, tokens)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Gradients through the scan and its rematerialisation (scanned is the last, "dots").
    grads = jax.jit(jax.grad(loss_of(model)))(params, tokens)
    stacked_grads = jax.jit(jax.grad(loss_of(scanned)))(stacked, tokens)
    chex.assert_trees_all_close(stacked_grads, lm.stack_layers(grads, 3), rtol=1e-4, atol=1e-6)


def test_lamb_gives_each_stacked_layer_its_own_trust_ratio(small):
    # The same gradients (random, stacked for the scanned layout) go to LAMB on both layouts,
    # so only the optimizer's layer-wise arithmetic is compared.
    _, params, _ = small
    kwargs = dict(weight_decay=0.01, weight_decay_mask=optlib.masks.exclude_paths("bias|scale"))
    per_leaf = optlib.lamb(0.1, **kwargs)
    per_layer = optlib.lamb(0.1, layer_axes=optlib.masks.stacked_layers(), **kwargs)
    one_ratio = optlib.lamb(0.1, **kwargs)  # a whole stack as one layer: must differ

    @jax.jit
    def two_steps(flat, grads):
        stacked = lm.stack_layers(flat, 3)
        states = per_leaf.init(flat), per_layer.init(stacked), one_ratio.init(stacked)
        out = []
        for g in grads:
            u_flat, s_flat = per_leaf.update(g, states[0], flat)
            g_stacked = lm.stack_layers(g, 3)
            u_stacked, s_stacked = per_layer.update(g_stacked, states[1], stacked)
            u_lumped, s_lumped = one_ratio.update(g_stacked, states[2], stacked)
            states = s_flat, s_stacked, s_lumped
            out.append((u_flat, u_stacked, u_lumped))
            flat = optax.apply_updates(flat, u_flat)
            stacked = optax.apply_updates(stacked, u_stacked)
        return out

    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(2), 2 * len(leaves))
    grads = [
        treedef.unflatten(
            [jax.random.normal(k, x.shape) for k, x in zip(keys[i::2], leaves, strict=True)]
        )
        for i in range(2)
    ]
    for flat_updates, stacked_updates, lumped in two_steps(params, grads):
        chex.assert_trees_all_close(
            stacked_updates, lm.stack_layers(flat_updates, 3), rtol=1e-5, atol=1e-8
        )
        kernel = lambda u: np.asarray(u["layers"]["Dense_0"]["kernel"])  # noqa: E731
        assert not np.allclose(kernel(lumped), kernel(stacked_updates), rtol=1e-3)


def test_mixed_precision_policy(small):
    full, params, tokens = small
    mixed = lm.Transformer(**SMALL, dtype=jnp.bfloat16)
    mixed_params = jax.eval_shape(mixed.init, jax.random.PRNGKey(0), tokens)["params"]
    chex.assert_trees_all_equal_shapes_and_dtypes(mixed_params, params)  # float32 params

    @jax.jit
    def both(p):
        return mixed.apply({"params": p}, tokens), full.apply({"params": p}, tokens)

    logits, want = both(params)
    assert logits.dtype == jnp.float32
    error = np.abs(logits - want)
    assert error.mean() < 1e-2 and error.max() < 0.1  # bf16 rounding, not another function
    # Gradients (hence optimizer state) follow the float32 params.
    grads = jax.eval_shape(jax.grad(loss_of(mixed)), params, tokens)
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_padded_vocabulary_is_masked_out_of_the_loss():
    config = workloads.default_config("lm")
    config.update(d_model=16, num_heads=2, num_layers=1, context=16, batch_size=4)
    plain = workloads.make(config)
    config.vocab_multiple = 128
    padded = workloads.make(config)
    vocab = plain.vocab_size
    assert padded.vocab_size == vocab and padded.padded_vocab_size == 128 > vocab
    batch = padded.batch(0)

    @jax.jit
    def both(rng):
        params = padded.init_params(rng)
        raw = padded.model.apply({"params": params}, batch["tokens"][:, :-1])
        return padded.loss(params, batch), raw

    loss, raw = both(jax.random.PRNGKey(0))
    assert raw.shape[-1] == 128
    labels = batch["tokens"][:, 1:]
    want = optax.softmax_cross_entropy_with_integer_labels(raw[..., :vocab], labels)
    np.testing.assert_allclose(loss, jnp.mean(want), rtol=1e-6)


def test_tied_embeddings_drop_the_output_layer():
    config = workloads.default_config("lm")
    config.update(d_model=16, num_heads=2, num_layers=1, context=16)
    untied = jax.eval_shape(workloads.make(config).init_params, jax.random.PRNGKey(0))
    config.tie_embeddings = True
    tied_workload = workloads.make(config)
    tied = jax.eval_shape(tied_workload.init_params, jax.random.PRNGKey(0))
    assert set(untied) - set(tied) == {"Dense_0"}
    count = lambda p: sum(math.prod(x.shape) for x in jax.tree.leaves(p))  # noqa: E731
    vocab = tied_workload.padded_vocab_size
    assert count(untied) - count(tied) == vocab * 16 + vocab


def test_flops_per_token_is_6n_plus_attention():
    config = workloads.default_config("lm")
    config.update(d_model=16, num_heads=2, num_layers=2, context=8, tie_embeddings=True)
    workload = workloads.make(config)
    d, v, layers, context = 16, workload.padded_vocab_size, 2, 8
    per_block = 2 * 2 * d + d * 3 * d + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d
    matmul_params = layers * per_block + 2 * d + v * d  # blocks, final norm, tied output
    assert workload.flops_per_token() == 6 * matmul_params + 12 * layers * d * context


# --- the presets ---------------------------------------------------------------------------------


def test_gpt2_small_has_124m_parameters():
    config = gpt2_small.get_config()
    config.workload.vocab_size = 50257
    workload = workloads.make(config.workload)
    assert workload.padded_vocab_size == 50304
    abstract = jax.eval_shape(workload.init_params, jax.random.PRNGKey(0))
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))
    assert abs(count - 124e6) / 124e6 < 0.01, count
    assert abstract["layers"]["Dense_0"]["kernel"].shape == (12, 768, 3 * 768)
    config.workload.vocab_size = 256  # the byte tokenizer: about 85M
    workload = workloads.make(config.workload)
    abstract = jax.eval_shape(workload.init_params, jax.random.PRNGKey(0))
    assert 84e6 < sum(math.prod(x.shape) for x in jax.tree.leaves(abstract)) < 87e6


def reduced_gpt2_small(num_layers: int, context: int, batch_size: int):
    """gpt2_small's model (d=768, 12 heads, bf16, scan, remat, tied, padded vocabulary) at a
    depth, context and batch a CPU test can afford, on the pydoc text."""
    config = gpt2_small.get_config()
    config.workload.update(
        num_layers=num_layers,
        context=context,
        batch_size=batch_size,
        eval_windows=8,
        eval_batch_size=4,
    )
    config.steps = 2
    config.progress_bar = False
    return config


def test_gpt2_small_step_compiles_for_8_cpu_devices():
    config = reduced_gpt2_small(num_layers=1, context=16, batch_size=8)
    report = aot.compile_report(config, {"data": 1, "fsdp": 8})
    assert report.mesh == {"data": 1, "fsdp": 8}
    # Params (float32) and AdamW's two moments, split 8 ways; the step and counts whole.
    assert report.num_params * 12 / 8 <= report.state_bytes < report.num_params * 12 / 8 + 2**20
    assert report.params_bytes < report.num_params * 4 / 8 + 2**20
    assert report.argument_bytes == report.state_bytes + report.batch_bytes
    assert report.temp_bytes > 0 and "per device" in report.format()


def test_gpt2_small_reduced_depth_trains_a_real_step(tmp_path):
    config = reduced_gpt2_small(num_layers=1, context=32, batch_size=8)
    result = train.train(config, tmp_path, return_state=True)
    assert result["step"] == 2
    records = [r for r in metrics.read_metrics(tmp_path) if r["split"] == "train"]
    assert all(np.isfinite(r["loss"]) for r in records)
    state = result["state"]
    assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state["opt_state"]) if x.ndim} == {
        jnp.dtype(jnp.float32)
    }
    assert state["params"]["layers"]["Dense_0"]["kernel"].shape == (1, 768, 3 * 768)
    assert np.isfinite(result["eval"]["eval_loss"])
