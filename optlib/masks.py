"""Mask and layer-axis helpers for the `*_mask` and `layer_axes` arguments of optlib."""

from optlib._masks import exclude_1d, exclude_paths, only_paths, stacked_layers

__all__ = ["exclude_1d", "exclude_paths", "only_paths", "stacked_layers"]
