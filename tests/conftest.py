"""Test setup: 8 simulated CPU devices, fixed before jax is imported anywhere.

Every test runs on a host platform that pretends to have 8 devices, so sharding code paths
(meshes, NamedSharding, collectives) are exercised on any laptop or CI machine.
"""

import os

# Must run before the first `import jax`: XLA reads these flags once, at backend start.
os.environ["JAX_PLATFORMS"] = "cpu"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

NUM_DEVICES = 8


def pytest_configure(config):
    del config
    if jax.device_count() != NUM_DEVICES:
        raise RuntimeError(
            f"tests expect {NUM_DEVICES} simulated CPU devices, got {jax.device_count()}: "
            "was jax imported before tests/conftest.py set XLA_FLAGS?"
        )


@pytest.fixture
def x64():
    """Enables float64 for one test (golden trajectories need it), then restores the flag."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


# `make test` runs the quick tier: every test but these, the slowest end-to-end checks
# (commands, notebooks, two-process runs, whole studies) and the contract table's
# mesh/cond/accumulation rows, chosen from `pytest --durations` on a 2-core CPU. Fresh clone,
# quiet 2-core AMD EPYC, 2026-12-01: everything 923 s of test time, the quick tier 342 s
# before the CLI subprocess tests and 6 more were added here. `make test FULL=1` runs
# everything; CI always does.
SLOW_MODULES = {
    "test_aot", "test_batch_size", "test_benchmarks", "test_checkpoint_fallback", "test_cli",
    "test_colabs",
    "test_lm_scale", "test_multiprocess", "test_predict", "test_probes_loop", "test_smoke",
    "test_sweep", "test_throughput", "test_tpu_scripts",
}  # fmt: skip
SLOW_TESTS = {
    "test_accumulation": {"test_microbatches_in_the_sharded_loop"},
    "test_contract": {
        "test_sharded_state_and_step_match_single_device",
        "test_state_keeps_shapes_and_dtypes_through_cond",
        "test_state_keeps_shardings_through_cond",
        "test_multi_steps_mini_steps_are_zero",
        "test_accumulation_over_different_microbatches",
    },
    "test_experiments": {
        "test_every_workload_runs_a_few_sharded_steps",
        "test_study_runs_at_toy_size",
        "test_fork_onto_another_mesh",
        "test_sharded_equals_single_device",
    },
    "test_hypergradient": {"test_logreg_alpha_rises_then_settles"},
    "test_laws": {
        "test_law_optimal_schedule_is_feasible_and_beats_cosine_and_wsd_under_the_law",
        "test_final_loss_is_the_prediction_at_the_last_step",
        "test_plot_optimal_draws_three_schedules",
    },
    "test_prospect": {
        "test_linear_convergence_beats_biased_sgd",
        "test_linear_and_full_tables_agree_and_epoch_runner",
    },
    "test_sam": {"test_m_sharpness_on_a_sharded_batch_equals_a_loop_over_groups"},
    "test_schedule_free": {
        "test_recompute_batch_stats_at_the_eval_point",
        "test_recompute_batch_stats_nnx_at_the_eval_point",
    },
    "test_spectral": {
        "test_worst_case_weights_properties",
        "test_worst_case_weights_against_brute_force_qp",
        "test_spectra_are_valid_for_many_sizes",
        "test_weight_at_rank_float32_precision_matches_float64_pav",
    },
    "test_workloads": {"test_steps_decrease_the_loss"},
}


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        module = getattr(item, "module", None)  # doctests have none: never slow
        module = module.__name__.rsplit(".", 1)[-1] if module else ""
        name = getattr(item, "originalname", item.name)
        if module in SLOW_MODULES or name in SLOW_TESTS.get(module, ()):
            item.add_marker(pytest.mark.slow)
