"""Experiment configs: each module's `get_config()` returns a complete, runnable ConfigDict."""
