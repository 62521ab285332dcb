"""Everything that runs: configs, workloads, the training loop, and the demo."""
