"""Spectral risk measures: spectra, worst-case weights over the permutahedron, penalised risk.

See `optlib._spectral` for the math and the χ² scaling convention (default: the authors' code,
`ν Ω(q) = (n ν / 2) ‖q − 1/n‖²`; `chi2_convention="readme"` gives `n ν ‖q − 1/n‖²`).
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
