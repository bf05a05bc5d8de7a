"""Stored posterior draws: one xarray Dataset per checkpoint, saved as zarr with named dimensions.

Variables (dims):

* ``sample_loss`` (chain, draw, sample): ℓ_i at each kept draw, the input of BIF and susceptibilities;
* ``init_sample_loss`` (sample): ℓ_i at the checkpoint itself (w*);
* ``sampling_loss`` (chain, step): the SGLD minibatch loss L_{B_t}(w_t) at every step, burn-in included;
* ``reference_loss`` (chain, step): the checkpoint's loss L_{B_t}(w*) on the same minibatch (the LLC's reference,
  :mod:`codedyn.sampling.llc`);
* ``init_sampling_loss`` (): L_n(w*), the mean over every sampling window the chains visit;
* ``observed`` (chain, draw, observable) and ``init_observed`` (observable): component observables (coordinate
  ``observable`` names them, e.g. ``L0.H1``, ``L1.MLP``);
* ``token_loss`` (chain, draw, sample, token) and ``init_token_loss`` (sample, token): the loss of every code token
  of every read-out sample (token t = the sample's t-th scored token, NaN after its last), from the same forward
  pass as ``sample_loss`` (whose mean over a sample's tokens they are); with static ``token_id``, ``token_start`` /
  ``token_end`` (characters of the solution), ``token_text``, ``token_kind`` and ``token_in_mutation``
  (sample, token), see :mod:`codedyn.data.token_kinds`;
* per-chain health (chain): ``healthy`` and ``unhealthy_reason`` ("" when healthy), ``drift_to_noise``,
  ``step_sharpness``, ``spikiness``, ``loss_autocorrelation``, ``chain_llc`` / ``chain_llc_se`` and
  ``fraction_below_init`` (share of post-burn-in steps with L_{B_t}(w_t) < L_{B_t}(w*)), see
  :mod:`codedyn.sampling.sgld`.

Attributes hold the resolved sampling config and n_beta (JSON), so analyses need nothing but this file.
"""

from __future__ import annotations

from pathlib import Path

TRACES_FILE = "traces.zarr"


def save_traces(dataset, folder: Path) -> Path:
    """Write the traces under ``folder``; the caller marks the folder completed afterwards."""
    import warnings

    path = Path(folder) / TRACES_FILE
    with warnings.catch_warnings():
        # Sample ids are fixed-width unicode, which zarr 3 stores fine but flags as not yet in its v3 spec.
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        dataset.to_zarr(path, mode="w", consolidated=False)
    return path


def load_traces(folder_or_path: Path):
    import xarray as xr

    path = Path(folder_or_path)
    if path.name != TRACES_FILE:
        path = path / TRACES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no stored posterior traces")
    return xr.open_zarr(path, consolidated=False).load()
