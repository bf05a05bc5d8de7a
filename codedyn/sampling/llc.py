"""The local learning coefficient (LLC) of a checkpoint, from its stored traces: one formula for every caller.

    LLC = nβ · mean_t [L_{B_t}(w_t) - L_{B_t}(w*)]

over the post-burn-in steps t of the healthy chains, B_t the minibatch step t used, w_t the chain's weights and w*
the checkpoint. The reference is the checkpoint's loss on the *same* minibatch (traces: ``sampling_loss`` minus
``reference_loss``), so the difficulty of the batches a chain happens to visit cancels; a fixed reference set
(devinterp's first batches) biases the LLC by the difference between those batches and the chains' mix.

Not a local minimum: the estimator assumes w* minimises the tempered, localised loss, so that the chains' loss
stays above L(w*). When the chains fall below L_B(w*) on more than ``max_fraction_below_reference`` of their steps
(a random initialisation always does: the gradient drift walks downhill), w* is not a local minimum, the number
nβ · (excess loss) measures how far downhill the chains got, not a learning coefficient, and the checkpoint gets no
LLC: ``LLCEstimate.local_minimum`` is False, its value and replicates are NaN and ``status`` says why in one
sentence.

Flat: when every healthy chain's excess loss is float rounding (within :data:`ROUNDING_ULPS` float32 ulps of the
loss), the weights that moved do not enter the loss -- a refined posterior of a dead component. The chains then sit
below L_B(w*) on about half the steps by rounding alone, which the local-minimum rule would misread; w* is a
(non-strict) minimum, the LLC is nβ · (mean rounding) ≈ 0, and ``status`` is :data:`FLAT`.

The statuses (one place defines them): :data:`LOCAL_MINIMUM`, :data:`FLAT`, a sentence starting with
:data:`NOT_A_LOCAL_MINIMUM`, and :data:`NO_HEALTHY_CHAIN`; the first two carry an LLC, the others NaN.

Callers: the influence table (``estimate_llc`` + ``LLCEstimate.replicates``), the calibration scores
(``llc_of`` on the excess losses) and the sampler's own chain-health check (``llc_of`` per chain).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

LOCAL_MINIMUM = "local minimum"
FLAT = "flat: the loss does not depend on these weights (every excess loss is float rounding), so its LLC is 0"
NOT_A_LOCAL_MINIMUM = "not a local minimum"
NO_HEALTHY_CHAIN = "no healthy chain: no LLC"
# Excess losses within this many float32 ulps of the loss are rounding (a batch evaluated in another order, a
# restricted update that changes nothing the loss sees), not a change of the loss.
ROUNDING_ULPS = 64


def llc_of(excess: np.ndarray, n_beta: float, axis=None):
    """nβ · mean of the excess losses L_B(w_t) - L_B(w*) (over ``axis``; all of them by default): the LLC formula."""
    return n_beta * np.mean(excess, axis=axis)


def excess_losses(sampling_loss: np.ndarray, reference_loss, burn_in: int) -> np.ndarray:
    """[chains, post-burn-in steps] of L_{B_t}(w_t) - L_{B_t}(w*). ``reference_loss``: [chains, steps] (matched
    minibatches) or a scalar (one reference for every step, e.g. a full-batch loss)."""
    losses = np.asarray(sampling_loss, dtype=np.float64)
    if losses.ndim != 2:
        raise ValueError(f"sampling_loss must be [chains, steps], got shape {losses.shape}")
    reference = np.broadcast_to(np.asarray(reference_loss, dtype=np.float64), losses.shape)
    return (losses - reference)[:, burn_in:]


def trace_excess_losses(traces) -> np.ndarray:
    """The excess losses [chains, post-burn-in steps] of every chain (healthy or not) of stored traces."""
    burn_in = json.loads(traces.attrs["sampling_config"])["burn_in"]
    return excess_losses(traces["sampling_loss"].values, traces["reference_loss"].values, burn_in)


def fraction_below(excess: np.ndarray) -> float:
    """Share of steps on which the chain's minibatch loss is below the checkpoint's on the same minibatch."""
    return float(np.mean(np.asarray(excess) < 0))


def is_flat(excess: np.ndarray, reference_loss) -> bool:
    """Whether every excess loss [chains, steps] is float rounding of a loss of size ``reference_loss`` (the
    checkpoint's losses on the same minibatches): the moved weights do not enter the loss. False when empty."""
    excess = np.asarray(excess, dtype=np.float64)
    scale = float(np.abs(np.asarray(reference_loss, dtype=np.float64)).max()) if np.size(reference_loss) else 0.0
    return excess.size > 0 and float(np.abs(excess).max()) <= ROUNDING_ULPS * float(np.finfo(np.float32).eps) * scale


@dataclass(frozen=True)
class LLCEstimate:
    """One checkpoint's LLC. ``value`` is NaN when w* is not a local minimum (``local_minimum`` False) or no chain
    is healthy; ``status`` is one sentence: :data:`LOCAL_MINIMUM`, :data:`FLAT` or why there is no LLC."""

    value: float
    per_chain: np.ndarray  # [healthy chains] nβ · mean excess of each healthy chain
    fraction_below_reference: float  # pooled over the healthy chains' post-burn-in steps
    local_minimum: bool
    status: str
    excess: np.ndarray  # [healthy chains, post-burn-in steps]
    n_beta: float

    def replicates(self, chain_idx: np.ndarray, draw_idx: np.ndarray) -> np.ndarray:
        """Bootstrap replicates [n_boot] from resampling indices of the healthy chains' steps
        (:func:`codedyn.analysis.stats.bootstrap_draws` over ``excess``); all NaN without an LLC."""
        if not self.local_minimum or self.excess.shape[0] == 0:
            return np.full(chain_idx.shape[0], math.nan)
        resampled = self.excess[chain_idx[:, :, None], draw_idx]  # [n_boot, chains, steps]
        return llc_of(resampled.reshape(resampled.shape[0], -1), self.n_beta, axis=1)


def estimate_llc(traces, max_fraction_below_reference: float | None = None) -> LLCEstimate:
    """The LLC of stored traces (healthy chains only) with the flat and local-minimum rules of the module
    docstring; the threshold defaults to the traces' own sampling config."""
    config = json.loads(traces.attrs["sampling_config"])
    threshold = (config.get("max_fraction_below_reference", 0.5) if max_fraction_below_reference is None
                 else max_fraction_below_reference)
    n_beta = float(traces.attrs["n_beta"])
    healthy = traces["healthy"].values
    excess = trace_excess_losses(traces)[healthy]
    if excess.shape[0] == 0:
        return LLCEstimate(math.nan, np.empty(0), math.nan, False, NO_HEALTHY_CHAIN, excess, n_beta)
    below = fraction_below(excess)
    per_chain = llc_of(excess, n_beta, axis=1)
    if is_flat(excess, traces["reference_loss"].values[healthy]):
        return LLCEstimate(float(llc_of(excess, n_beta)), per_chain, below, True, FLAT, excess, n_beta)
    if below > threshold:
        status = (f"{NOT_A_LOCAL_MINIMUM}: the chains' loss fell below the checkpoint's on the same minibatch in "
                  f"{100 * below:.0f}% of steps (more than {100 * threshold:.0f}%), so it gets no LLC")
        return LLCEstimate(math.nan, per_chain, below, False, status, excess, n_beta)
    return LLCEstimate(float(llc_of(excess, n_beta)), per_chain, below, True, LOCAL_MINIMUM, excess, n_beta)
