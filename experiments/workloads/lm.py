"""A 2-layer decoder-only transformer LM at the character level on CPython's `pydoc_data.topics`.

The corpus is the help text every CPython ships (`pydoc_data.topics.topics`, about 465k
characters in 3.11), joined in sorted-key order; the vocabulary is its sorted set of characters
(so it is fixed for a given CPython version). The first 90% is training text, the last 10% is
validation. A training batch is `batch_size` windows of `context + 1` characters at offsets
drawn from `default_rng([seed, step])`; the eval set is `eval_windows` windows spread evenly
over the validation text.

Model (flax.linen, pre-LN): token embedding + learned positions, `num_layers` blocks of causal
multi-head self-attention and a 4x GELU MLP, a final LayerNorm and an untied output layer.
The loss is mean next-character cross-entropy in nats. Target: validation loss <= 1.50.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.workloads import _common
from experiments.workloads.base import Batch, Params, Target, Workload


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
    d_model: int
    num_heads: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        head_dim = self.d_model // self.num_heads
        h = nn.LayerNorm()(x)
        qkv = nn.Dense(3 * self.d_model, use_bias=False)(h)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3, self.num_heads, head_dim), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim).astype(np.float32)
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        x = x + nn.Dense(self.d_model)(attended.reshape(batch, length, self.d_model))
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.d_model)(nn.gelu(nn.Dense(self.mlp_ratio * self.d_model)(h)))
        return x + h


class Transformer(nn.Module):
    vocab_size: int
    context: int
    d_model: int
    num_heads: int
    num_layers: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        positions = self.param("positions", init, (self.context, self.d_model))
        embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=init)
        # The table whole for the lookup (it is split over features under FSDP): a lookup into
        # the split table gives feature-split activations, which XLA reshards to and from the
        # batch split in every block by gathering them whole.
        x = jnp.take(_common.gather_whole(embed.embedding), tokens, axis=0)
        x = x + positions[: tokens.shape[1]]
        for _ in range(self.num_layers):
            x = Block(self.d_model, self.num_heads, self.mlp_ratio)(x)
        return nn.Dense(self.vocab_size)(nn.LayerNorm()(x))


class CharLM(Workload):
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
        self.ids, self.vocab, self.split = load_text()
        if len(self.ids) - self.split < self.context + 1:
            raise ValueError("workload config 'context' is longer than the validation text")
        self.model = Transformer(
            len(self.vocab), self.context, d_model, num_heads, num_layers, mlp_ratio
        )

    def init_params(self, rng: jax.Array) -> Params:
        return self.model.init(rng, jnp.zeros((1, self.context), jnp.int32))["params"]

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        tokens = batch["tokens"]
        logits = self.model.apply({"params": params}, tokens[:, :-1])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    def _windows(self, starts: np.ndarray) -> np.ndarray:
        return self.ids[starts[:, None] + np.arange(self.context + 1)]

    def batch(self, step: int) -> Batch:
        rng = _common.step_rng(self.seed, step)
        starts = rng.integers(0, self.split - self.context, size=self.batch_size)
        return {"tokens": self._windows(starts)}

    def eval_batch(self) -> Batch:
        last = len(self.ids) - self.context - 1
        starts = np.linspace(self.split, last, self.eval_windows).astype(np.int64)
        return {"tokens": self._windows(starts)}

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        tokens = batch["tokens"]
        logits = self.model.apply({"params": params}, tokens[:, :-1])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        correct = (jnp.argmax(logits, -1) == tokens[:, 1:]).astype(jnp.float32)
        return {"eval_loss": jnp.mean(losses), "eval_accuracy": jnp.mean(correct)}


def make(config: ml_collections.ConfigDict) -> CharLM:
    return CharLM(_common.resolve(config, default_config()))
