"""Step-size sensitivity: does an estimate move when the SGLD step ε shrinks?

SGLD with a finite step samples a perturbed posterior: the discretisation bias of an LLC, a BIF or a χ grows with
ε, and nothing in one posterior's intervals shows it (they hold the Monte Carlo error of the chain it ran, bias
included). Sampling the same posterior again at ε / k (same nβ, γ, seeds and chain length) and comparing the two
estimates quantity by quantity exposes the bias that the smaller step removes: a quantity whose two estimates
differ by more than their combined 95% interval, |a − b| > 1.96 · sqrt(se_a² + se_b²) (se = interval width / 3.92),
is *flagged*: its value depends on the step size beyond its Monte Carlo error, so the larger step's value should
not be trusted at its stated precision. An unflagged quantity is consistent with no step-size effect at the
precision the two posteriors have (not proof of none: the check has the power of their intervals).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Z95 = 1.959963984540054  # the two-sided 95% normal quantile: interval width / (2 · Z95) is the standard error


def interval_se(low: float, high: float) -> float:
    """The standard error a 95% interval implies (its width / 3.92)."""
    return (high - low) / (2 * Z95)


def compare_step_sizes(at_lr: Mapping[str, tuple[float, float, float]],
                       at_smaller: Mapping[str, tuple[float, float, float]], lr: float,
                       smaller_lr: float) -> list[dict]:
    """One row per quantity present in both ``{quantity: (value, low, high)}`` tables (estimates with 95% intervals
    at step ``lr`` and at ``smaller_lr``): both values and intervals, ``difference`` (value at lr − value at the
    smaller step), ``margin`` (1.96 · sqrt(se² + se²)), ``flagged`` (|difference| > margin) and ``comparable``
    (False where either estimate or interval is not a finite number: such a row is never flagged and says so)."""
    rows = []
    for quantity in [q for q in at_lr if q in at_smaller]:
        (a, a_low, a_high), (b, b_low, b_high) = at_lr[quantity], at_smaller[quantity]
        numbers = (a, a_low, a_high, b, b_low, b_high)
        comparable = all(math.isfinite(float(x)) for x in numbers)
        difference = float(a - b) if comparable else math.nan
        margin = Z95 * math.hypot(interval_se(a_low, a_high), interval_se(b_low, b_high)) if comparable else math.nan
        rows.append({"quantity": quantity, "lr": lr, "value": float(a), "low": float(a_low), "high": float(a_high),
                     "smaller_lr": smaller_lr, "value_smaller": float(b), "low_smaller": float(b_low),
                     "high_smaller": float(b_high), "difference": difference, "margin": margin,
                     "comparable": comparable, "flagged": bool(comparable and abs(difference) > margin)})
    return rows


def flagged_quantities(rows: list[dict]) -> list[str]:
    """The quantities of :func:`compare_step_sizes` rows whose value moves with the step size."""
    return [row["quantity"] for row in rows if row["flagged"]]
