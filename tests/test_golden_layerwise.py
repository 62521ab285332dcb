"""LARS, TVLARS and LAMB against the authors' reference trajectories (golden_layerwise.json)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optlib
from tests import golden

REFERENCE = golden.load("golden_layerwise.json")
LARS_KEY = "pytorch_optimizer.LARS(lr=1.0, wd=5e-4, momentum=0.9, trust_coefficient=0.02)"
TVLARS_KEY = "tvlars_ref.TVLARS(lr=1.0, wd=5e-4, momentum=0.9, eta=0.02, lmbda=0.1)"
LAMB_KEY = "LAMB(TF-addons port; lr=0.05, b=(0.9,0.999), eps=1e-6, wd=0.01)"


def test_lars_matches_reference_with_1d_leaves_excluded(x64):
    # pytorch-optimizer's LARS skips ndim <= 1 leaves for both decay and adaptation.
    opt = optlib.lars(
        1.0,
        momentum=0.9,
        weight_decay=5e-4,
        trust_coefficient=0.02,
        weight_decay_mask=optlib.masks.exclude_1d,
        adaptation_mask=optlib.masks.exclude_1d,
    )
    golden.replay(opt, REFERENCE[LARS_KEY])


def test_tvlars_repo_mode_matches_reference(x64):
    opt = optlib.tvlars(
        1.0,
        momentum=0.9,
        weight_decay=5e-4,
        trust_coefficient=0.02,
        decay_rate=0.1,
        repo_compat=True,
    )
    golden.replay(opt, REFERENCE[TVLARS_KEY])


def test_lamb_matches_tf_addons_reference(x64):
    golden.replay(optlib.lamb(0.05, weight_decay=0.01), REFERENCE[LAMB_KEY])


def test_lamb_step_one_trust_ratios(x64):
    # tau = ||u_adapted|| / ||u_unadapted|| at step 1 recovers the reference's trust ratios.
    params = golden.toy_params()
    grads = jax.grad(golden.toy_loss)(params)
    no_adapt = {"p1": False, "p2": False}
    adapted = optlib.scale_by_lamb(weight_decay=0.01)
    plain = optlib.scale_by_lamb(weight_decay=0.01, adaptation_mask=no_adapt)
    u_on, _ = adapted.update(grads, adapted.init(params), params)
    u_off, _ = plain.update(grads, plain.init(params), params)
    ratios = [float(jnp.linalg.norm(u_on[k]) / jnp.linalg.norm(u_off[k])) for k in ("p1", "p2")]
    np.testing.assert_allclose(ratios, REFERENCE[LAMB_KEY][0]["trust_ratios"], rtol=1e-9)


def test_replay_detects_a_wrong_optimizer(x64):
    # The harness must be able to fail: the paper-denominator LARS without masks is not the
    # reference run.
    with pytest.raises(AssertionError):
        golden.replay(
            optlib.lars(1.0, weight_decay=5e-4, trust_coefficient=0.02), REFERENCE[LARS_KEY]
        )
