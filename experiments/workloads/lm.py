"""A decoder-only transformer LM: the character LM on CPython's help text, or any prepared corpus.

Data. With `data = ""` (the default) the corpus is the help text every CPython ships
(`pydoc_data.topics.topics`, about 465k characters in 3.11), joined in sorted-key order; the
vocabulary is its sorted set of characters (fixed for a given CPython version). The first 90% is
training text, the last 10% validation. A training batch is `batch_size` windows of
`context + 1` characters at offsets drawn from `default_rng([seed, step])`; the eval set is
`eval_windows` windows spread evenly over the validation text.

With `data = "DIR"`, a corpus written by `python -m experiments.data prepare` is read through
memory maps (`experiments.data.TokenCorpus`): training windows in grain's seeded order, row r of
step t being a pure function of (seed, t, r), so each process of a multi-process run reads only
its own rows (`batch_rows`); the eval set is `eval_windows` fixed windows of the validation
split. The manifest is checked when the workload is built.

Model (flax.linen, pre-LN): token embedding + learned positions, `num_layers` blocks of causal
multi-head self-attention and a `mlp_ratio`x GELU MLP, a final LayerNorm and an output layer
(untied, with a bias; or tied to the embedding, without). The loss is mean next-token
cross-entropy in nats, computed in float32. Options for larger models:

* `vocab_multiple`: the vocabulary is padded to a multiple of it (128 suits TPU matmuls); the
  padded logits are masked out of the softmax, so the loss is over the real vocabulary only.
* `scan_layers`: the blocks are one `nn.scan` over stacked parameters (leading axis = layer,
  under the key `layers`, which `optlib.masks.stacked_layers()` matches, so LAMB/LARS give
  each layer its own trust ratio); compile time no longer grows with depth.
* `remat`: recompute each block's activations in the backward pass: "block" saves nothing
  inside a block, "dots" saves the matmul outputs (less recompute, more memory).
* `compute_dtype` / `param_dtype`: the mixed-precision policy. bfloat16 compute with float32
  parameters (hence float32 optimizer state, which follows the parameters) is the usual TPU
  choice; attention softmax, logits and loss stay float32 either way.
* `tie_embeddings`: output layer = the embedding table transposed.
* `eval_batch_size`: evaluate the eval set in chunks of this many windows (`lax.map`), so the
  eval logits of a large vocabulary need not fit at once; 0 evaluates it in one call.

Target: validation loss <= `target_loss` (1.50 nats/char is the pydoc char LM's).
"""

from __future__ import annotations

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.workloads import _common
from experiments.workloads.base import Batch, Params, Target, Workload

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REMAT_POLICIES = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "lm",
            "seed": 0,
            "batch_size": 32,
            "context": 64,
            "d_model": 128,
            "num_heads": 4,
            "num_layers": 2,
            "mlp_ratio": 4,
            "eval_windows": 128,
            "target_loss": 1.50,
            # "" = the pydoc char text; else a directory from `python -m experiments.data prepare`.
            "data": "",
            "vocab_size": 0,  # 0: the data's; larger values reserve ids the data never uses
            "vocab_multiple": 1,  # pad the vocabulary to a multiple of this (128 on TPU)
            "tie_embeddings": False,
            "scan_layers": False,
            "remat": "none",  # one of REMAT_POLICIES
            "compute_dtype": "float32",  # activations and matmuls
            "param_dtype": "float32",  # parameters, and with them the optimizer state
            "eval_batch_size": 0,  # 0: the whole eval set in one call
        }
    )


@functools.lru_cache(maxsize=1)
def load_text() -> tuple[np.ndarray, tuple[str, ...], int]:
    """(character ids as int32, vocabulary, index where validation starts)."""
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    vocab = tuple(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text))
    return ids, vocab, int(0.9 * len(ids))


class Block(nn.Module):
    """Pre-LN transformer block; returns (x, None) when `scanned` (the nn.scan signature)."""

    d_model: int
    num_heads: int
    mlp_ratio: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    scanned: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, _=None):
        batch, length, _unused = x.shape
        head_dim = self.d_model // self.num_heads
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = functools.partial(nn.LayerNorm, dtype=self.dtype, param_dtype=self.param_dtype)
        h = norm()(x)
        qkv = dense(3 * self.d_model, use_bias=False)(h)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3, self.num_heads, head_dim), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim).astype(np.float32)
        scores = scores.astype(jnp.float32)  # mask and softmax in float32 under any policy
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        attended = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        x = x + dense(self.d_model)(attended.reshape(batch, length, self.d_model))
        h = norm()(x)
        h = dense(self.d_model)(nn.gelu(dense(self.mlp_ratio * self.d_model)(h)))
        x = x + h
        return (x, None) if self.scanned else x


class Transformer(nn.Module):
    """Decoder-only LM; returns float32 logits over the (padded) vocabulary."""

    vocab_size: int  # already padded
    context: int
    d_model: int
    num_heads: int
    num_layers: int
    mlp_ratio: int
    tie_embeddings: bool = False
    scan_layers: bool = False
    remat: str = "none"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        positions = self.param("positions", init, (self.context, self.d_model), self.param_dtype)
        embed = nn.Embed(
            self.vocab_size, self.d_model, embedding_init=init, param_dtype=self.param_dtype
        )
        # The table whole for the lookup (it is split over features under FSDP): a lookup into
        # the split table gives feature-split activations, which XLA reshards to and from the
        # batch split in every block by gathering them whole.
        table = _common.gather_whole(embed.embedding).astype(self.dtype)
        x = jnp.take(table, tokens, axis=0)
        x = x + positions[: tokens.shape[1]].astype(self.dtype)
        block = Block
        if self.remat != "none":
            # prevent_cse only matters outside scan (flax's advice: False under nn.scan).
            block = nn.remat(
                Block, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan_layers
            )
        kwargs = dict(
            d_model=self.d_model,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.scan_layers:
            stack = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=self.num_layers,
            )
            x, _ = stack(scanned=True, name="layers", **kwargs)(x, None)
        else:
            for _ in range(self.num_layers):
                x = block(**kwargs)(x)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(x)
        if self.tie_embeddings:
            logits = jnp.einsum("bld,vd->blv", h, table)
        else:
            logits = nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        return logits.astype(jnp.float32)


def stack_layers(params: Params, num_layers: int) -> Params:
    """The params of an unstacked model (`Block_0` ... `Block_{L-1}`) in the scanned layout
    (`layers`, leading axis = layer): the same function, as `scan_layers=True` computes it."""
    blocks = [params[f"Block_{i}"] for i in range(num_layers)]
    out = {k: v for k, v in params.items() if not k.startswith("Block_")}
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return out


class CharLM(Workload):
    """The LM workload (named for its default, the pydoc character LM)."""

    def __init__(self, values: dict):
        self.name = "lm"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        self.context = _common.check_int(values, "context", low=2)
        d_model = _common.check_int(values, "d_model")
        num_heads = _common.check_int(values, "num_heads")
        if d_model % num_heads:
            raise ValueError(
                f"workload config 'num_heads' must divide 'd_model' ({d_model}), got {num_heads}"
            )
        num_layers = _common.check_int(values, "num_layers")
        mlp_ratio = _common.check_int(values, "mlp_ratio")
        self.eval_windows = _common.check_int(values, "eval_windows")
        target = _common.check_float(values, "target_loss", low_open=True)
        self.target = Target("eval_loss", target, "min")
        requested_vocab = _common.check_int(values, "vocab_size", low=0)
        multiple = _common.check_int(values, "vocab_multiple")
        tie = _check_bool(values, "tie_embeddings")
        scan = _check_bool(values, "scan_layers")
        remat = _common.check_choice(values, "remat", tuple(REMAT_POLICIES))
        compute = _common.check_choice(values, "compute_dtype", tuple(DTYPES))
        param = _common.check_choice(values, "param_dtype", tuple(DTYPES))
        self.eval_batch_size = _common.check_int(values, "eval_batch_size", low=0)
        data = values["data"]
        if not isinstance(data, str):
            raise ValueError(f"workload config 'data' must be a directory path or '', got {data!r}")

        self.corpus = None
        if data:
            from experiments.data import TokenCorpus

            data = os.path.expanduser(data)  # '~/optlib-data/NAME' on every TPU worker
            self.corpus = TokenCorpus(data, self.context, self.seed)
            data_vocab = self.corpus.vocab_size
            where = f"the manifest of {data}"
        else:
            self.ids, self.vocab, self.split = load_text()
            if len(self.ids) - self.split < self.context + 1:
                raise ValueError("workload config 'context' is longer than the validation text")
            data_vocab = len(self.vocab)
            where = "the pydoc text's characters"
        if requested_vocab and requested_vocab < data_vocab:
            raise ValueError(
                f"workload config 'vocab_size' ({requested_vocab}) is smaller than the "
                f"{data_vocab} ids of {where}"
            )
        self.vocab_size = requested_vocab or data_vocab
        self.padded_vocab_size = -(-self.vocab_size // multiple) * multiple
        self.num_layers, self.d_model = num_layers, d_model
        self.model = Transformer(
            self.padded_vocab_size,
            self.context,
            d_model,
            num_heads,
            num_layers,
            mlp_ratio,
            tie_embeddings=tie,
            scan_layers=scan,
            remat=remat,
            dtype=DTYPES[compute],
            param_dtype=DTYPES[param],
        )

    # --- model -------------------------------------------------------------------------
    def init_params(self, rng: jax.Array) -> Params:
        return self.model.init(rng, jnp.zeros((1, self.context), jnp.int32))["params"]

    def _logits(self, params: Params, inputs: jax.Array) -> jax.Array:
        logits = self.model.apply({"params": params}, inputs)
        if self.padded_vocab_size > self.vocab_size:  # padding ids never win the softmax
            real = jnp.arange(self.padded_vocab_size) < self.vocab_size
            logits = jnp.where(real, logits, jnp.finfo(jnp.float32).min)
        return logits

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        tokens = batch["tokens"]
        logits = self._logits(params, tokens[:, :-1])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    def _eval_sums(self, params: Params, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-row mean loss and accuracy over the row's positions."""
        logits = self._logits(params, tokens[:, :-1])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        correct = (jnp.argmax(logits, -1) == tokens[:, 1:]).astype(jnp.float32)
        return jnp.mean(losses, axis=1), jnp.mean(correct, axis=1)

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        tokens = batch["tokens"]
        if not self.eval_batch_size:
            logits = self._logits(params, tokens[:, :-1])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
            correct = (jnp.argmax(logits, -1) == tokens[:, 1:]).astype(jnp.float32)
            return {"eval_loss": jnp.mean(losses), "eval_accuracy": jnp.mean(correct)}
        chunk = self.eval_batch_size
        rows = tokens.reshape(-1, chunk, tokens.shape[-1])
        weight = batch["weight"].reshape(-1, chunk)
        losses, correct = jax.lax.map(lambda t: self._eval_sums(params, t), rows)
        return {
            "eval_loss": _common.weighted_mean(losses, weight),
            "eval_accuracy": _common.weighted_mean(correct, weight),
        }

    # --- data --------------------------------------------------------------------------
    def _windows(self, starts: np.ndarray) -> np.ndarray:
        return self.ids[starts[:, None] + np.arange(self.context + 1)]

    def batch(self, step: int) -> Batch:
        if self.corpus is not None:
            return {"tokens": self.corpus.rows(step, self.batch_size, range(self.batch_size))}
        rng = _common.step_rng(self.seed, step)
        starts = rng.integers(0, self.split - self.context, size=self.batch_size)
        return {"tokens": self._windows(starts)}

    def batch_rows(self, step: int, rows: np.ndarray) -> Batch:
        if self.corpus is not None:  # reads only these rows of the memory-mapped corpus
            return {"tokens": self.corpus.rows(step, self.batch_size, rows)}
        return super().batch_rows(step, rows)

    def eval_batch(self) -> Batch:
        if self.corpus is not None:
            tokens = self.corpus.eval_windows(self.eval_windows)
        else:
            last = len(self.ids) - self.context - 1
            starts = np.linspace(self.split, last, self.eval_windows).astype(np.int64)
            tokens = self._windows(starts)
        if self.eval_batch_size:
            return _common.pad_eval({"tokens": tokens}, self.eval_batch_size)
        return {"tokens": tokens}

    # --- compute accounting --------------------------------------------------------------
    @property
    def tokens_per_example(self) -> int:
        """Predicted tokens per row of a batch (tokens/s = examples/s x this)."""
        return self.context

    def flops_per_token(self) -> float:
        """Training FLOPs per token by the 6N + attention formula (Kaplan et al. 2020;
        PaLM, Chowdhery et al. 2022, App. B): 6 x the parameters that multiply activations
        (the blocks, the final norm and the output layer; not the embedding lookup or the
        positions) + 12 x layers x d_model x context for the attention scores and values."""
        abstract = jax.eval_shape(self.init_params, jax.random.PRNGKey(0))
        total = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))
        lookup = self.padded_vocab_size * self.d_model + self.context * self.d_model
        output = self.padded_vocab_size * self.d_model if self.model.tie_embeddings else 0
        matmul_params = total - lookup + output
        return 6.0 * matmul_params + 12.0 * self.num_layers * self.d_model * self.context


def _check_bool(values: dict, key: str) -> bool:
    value = values[key]
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"workload config {key!r} must be True or False, got {value!r}")
    return bool(value)


def make(config: ml_collections.ConfigDict) -> CharLM:
    return CharLM(_common.resolve(config, default_config()))
