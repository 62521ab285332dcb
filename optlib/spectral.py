"""Spectral risk measures: spectra, worst-case weights over the permutahedron, penalised risk.

See `optlib._spectral` for the math and the χ² scaling convention (default: the authors' code,
`ν Ω(q) = (n ν / 2) ‖q − 1/n‖²`; `chi2_convention="readme"` gives `n ν ‖q − 1/n‖²`).

Example: the worst-case weights of eight losses under CVaR 0.5; without a penalty they are the
spectrum by rank, with the χ² penalty they spread toward 1/n, and they always sum to one.

>>> import jax.numpy as jnp
>>> from optlib import spectral
>>> losses = jnp.array([0.3, 2.0, 0.1, 1.5, 0.7, 0.05, 3.0, 0.9])
>>> sigma = spectral.cvar(8, 0.5)
>>> spectral.worst_case_weights(losses, sigma, shift_cost=0.0).tolist()
[0.0, 0.25, 0.0, 0.25, 0.0, 0.0, 0.25, 0.25]
>>> q = spectral.worst_case_weights(losses, sigma, shift_cost=1.0, penalty="chi2")
>>> [round(v, 6) for v in q.tolist()]
[0.046875, 0.25, 0.021875, 0.196875, 0.096875, 0.015625, 0.25, 0.121875]
>>> round(float(q.sum()), 6)
1.0
>>> round(float(spectral.spectral_risk(losses, sigma, 0.0)), 6)
1.85
"""

from optlib._spectral import (
    CHI2_CONVENTIONS,
    PENALTIES,
    check_spectrum,
    chi2_coefficient,
    cvar,
    esrm,
    extremile,
    spectral_risk,
    uniform,
    worst_case_weights,
)

__all__ = [
    "CHI2_CONVENTIONS",
    "PENALTIES",
    "check_spectrum",
    "chi2_coefficient",
    "cvar",
    "esrm",
    "extremile",
    "spectral_risk",
    "uniform",
    "worst_case_weights",
]
