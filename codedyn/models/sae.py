"""A TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") for one residual stream.

Shapes: x [N, d] activations, z [N, m] latents (m = width), exactly ``k`` non-zero per row (the k largest
pre-activations, passed through a ReLU so a latent never "fires" negatively).

* Input scale: the SAE works on x / scale, ``scale = sqrt(E|x - mean|^2 / d)`` measured once on the training data, so
  one learning rate fits residual streams of very different norms (a checkpoint at step 0 vs one late in training).
  ``encode`` / ``decode`` / ``reconstruct`` take and return activations in the model's own units.
* encode: z = TopK(ReLU((x / scale - b_dec) W_enc + b_enc)); decode: x_hat = scale * (z W_dec + b_dec).
* Decoder rows have unit norm: renormalised after every optimizer step, and the gradient component parallel to each
  row is removed before the step (so Adam does not spend its steps fighting the constraint).
* Loss: normalised MSE |x - x_hat|^2 / E|x - mean|^2 plus ``aux_coef`` times the auxiliary loss, in which the
  ``aux_k`` most active *dead* latents (no firing for ``dead_tokens`` training tokens) reconstruct the residual error
  x - x_hat; it gives dead latents a gradient, which revives most of them.
* Init: W_dec random unit rows, W_enc = W_dec^T, b_dec = mean of the training data, b_enc = 0; or a copy of another
  SAE (``init``) to follow latents through training.

Metrics (:func:`sae_metrics`) on held-out activations: explained variance 1 - sum|x - x_hat|^2 / sum|x - mean|^2, L0
(mean non-zero latents per token), dead fraction (latents that never fire on the held-out tokens); the CE loss
recovered needs the model (:func:`codedyn.models.activations.ce_loss_recovered`).

Torch is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_FILE = "sae_L{layer}.safetensors"
CONFIG_FILE = "sae_L{layer}.json"


@dataclass
class TopKSAE:
    W_enc: Any  # torch.Tensor [d, m]
    b_enc: Any  # [m]
    W_dec: Any  # [m, d], unit-norm rows
    b_dec: Any  # [d], in scaled units
    k: int
    scale: float = 1.0
    meta: dict = field(default_factory=dict)  # layer, step, ... (stored with the weights)

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def width(self) -> int:
        return int(self.W_enc.shape[1])

    def parameters(self) -> list:
        return [self.W_enc, self.b_enc, self.W_dec, self.b_dec]

    def to(self, device) -> TopKSAE:
        return TopKSAE(*(p.detach().to(device) for p in self.parameters()), k=self.k, scale=self.scale,
                       meta=dict(self.meta))

    def pre_activations(self, x):
        """ReLU'd encoder pre-activations [N, m] of activations x [N, d] (model units)."""
        import torch

        return torch.relu((x.to(self.W_enc.dtype) / self.scale - self.b_dec) @ self.W_enc + self.b_enc)

    def encode(self, x):
        """Sparse latents z [N, m]: the k largest (ReLU'd) pre-activations of each row, zeros elsewhere."""
        import torch

        pre = self.pre_activations(x)
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def encoder(self):
        """:meth:`encode` as a torch module: whatever times module forward passes (the run's model clock,
        :class:`codedyn.runs.timings.ModelClock`) then counts encoding as model compute, like the language model's
        own forward passes."""
        return _encoder_type()(self)

    def decode(self, z):
        return (z @ self.W_dec + self.b_dec) * self.scale

    def reconstruct(self, x):
        """x_hat with x's shape (any leading dims)."""
        flat = x.reshape(-1, x.shape[-1])
        return self.decode(self.encode(flat)).reshape(x.shape).to(x.dtype)

    # ------------------------------------------------------------------------------------------------ storage

    def save(self, folder: Path, layer: int) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()},
                  str(folder / WEIGHTS_FILE.format(layer=layer)))
        config = {"d_in": self.d_in, "width": self.width, "k": self.k, "scale": self.scale, "layer": layer,
                  "architecture": "topk", "hook": f"gpt_neox.layers.{layer} (resid_post)", **self.meta}
        (folder / CONFIG_FILE.format(layer=layer)).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path, layer: int, device: str = "cpu") -> TopKSAE:
        from safetensors.torch import load_file

        folder = Path(folder)
        weights_path = folder / WEIGHTS_FILE.format(layer=layer)
        if not weights_path.is_file():
            raise FileNotFoundError(f"{folder} holds no SAE for layer {layer} ({weights_path.name} missing)")
        config = json.loads((folder / CONFIG_FILE.format(layer=layer)).read_text())
        tensors = load_file(str(weights_path), device=device)
        meta = {key: value for key, value in config.items() if key not in {"d_in", "width", "k", "scale"}}
        return cls(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], k=int(config["k"]),
                   scale=float(config["scale"]), meta=meta)


def init_sae(x, width: int, k: int, seed: int):
    """A fresh SAE for activations x [N, d]: scale and b_dec from the data, unit decoder rows, W_enc = W_dec^T."""
    import torch

    x = x.float()
    mean = x.mean(dim=0)
    scale = float(torch.sqrt(((x - mean) ** 2).sum(dim=-1).mean() / x.shape[1]).clamp_min(1e-8))
    generator = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(width, x.shape[1], generator=generator).to(x.device)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    return TopKSAE(w_dec.T.clone(), torch.zeros(width, device=x.device), w_dec, mean / scale, k=k, scale=scale)


@dataclass(frozen=True)
class TrainingLog:
    steps: int
    tokens: int  # token activations processed (epochs x N)
    seconds: float
    final_loss: float  # normalised MSE of the last epoch
    final_aux_loss: float
    dead_at_end: int  # latents dead by the training counter at the end

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens, "seconds": self.seconds, "final_loss": self.final_loss,
                "final_aux_loss": self.final_aux_loss, "dead_at_end": self.dead_at_end,
                "tokens_per_second": self.tokens_per_second}


def project_decoder_grad(sae: TopKSAE) -> None:
    """Remove the component of W_dec's gradient parallel to each (unit) decoder row."""
    grad = sae.W_dec.grad
    if grad is not None:
        grad -= (grad * sae.W_dec.data).sum(dim=-1, keepdim=True) * sae.W_dec.data


def normalise_decoder(sae: TopKSAE) -> None:
    sae.W_dec.data /= sae.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def train_sae(
    x,
    width: int,
    k: int,
    epochs: int,
    batch_size: int,
    lr: float,
    aux_k: int,
    aux_coef: float,
    dead_tokens: int,
    seed: int,
    init: TopKSAE | None = None,
    progress_task: Any = None,
) -> tuple[TopKSAE, TrainingLog]:
    """Train a TopK SAE on activations x [N, d] (float tensor). ``init``: start from a copy of this SAE (its scale
    is kept, so latent identity carries over). ``progress_task.advance()`` is called once per epoch."""
    import torch

    x = x.float().contiguous()
    n, d = x.shape
    sae = init_sae(x, width, k, seed) if init is None else init.to(x.device)
    if sae.d_in != d or sae.width != width or sae.k != k:
        raise ValueError(f"the initial SAE ({sae.d_in} -> {sae.width}, k {sae.k}) does not match "
                         f"({d} -> {width}, k {k})")
    for p in sae.parameters():
        p.requires_grad_(True)
    scaled = x / sae.scale
    variance = float(((scaled - scaled.mean(dim=0)) ** 2).sum(dim=-1).mean().clamp_min(1e-12))
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    since_fired = torch.zeros(width, dtype=torch.long, device=x.device)
    steps, last_loss, last_aux = 0, math.nan, 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        losses, aux_losses = [], []
        for begin in range(0, n, batch_size):
            batch = scaled[order[begin : begin + batch_size]]
            pre = torch.relu((batch - sae.b_dec) @ sae.W_enc + sae.b_enc)
            values, indices = pre.topk(k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, indices, values)
            error = batch - (z @ sae.W_dec + sae.b_dec)
            loss = error.pow(2).sum(dim=-1).mean() / variance
            fired = torch.zeros(width, dtype=torch.bool, device=x.device)
            fired[indices[values > 0]] = True
            since_fired += batch.shape[0]
            since_fired[fired] = 0
            dead = since_fired >= dead_tokens
            aux = torch.zeros((), device=x.device)
            if aux_k > 0 and aux_coef > 0 and bool(dead.any()):
                masked = pre.masked_fill(~dead, -math.inf)
                a_values, a_indices = masked.topk(min(aux_k, int(dead.sum())), dim=-1)
                z_aux = torch.zeros_like(pre).scatter(-1, a_indices, torch.relu(a_values))
                residual = error.detach()
                aux = (residual - z_aux @ sae.W_dec).pow(2).sum(dim=-1).mean() / residual.pow(2).sum(
                    dim=-1).mean().clamp_min(1e-12)
            total = loss + aux_coef * aux
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            project_decoder_grad(sae)
            optimizer.step()
            with torch.no_grad():
                normalise_decoder(sae)
            steps += 1
            losses.append(float(loss.detach()))
            aux_losses.append(float(aux.detach()))
        last_loss, last_aux = float(np.mean(losses)), float(np.mean(aux_losses))
        if progress_task is not None:
            progress_task.advance()
    seconds = time.perf_counter() - start
    for p in sae.parameters():
        p.requires_grad_(False)
    trained = TopKSAE(*(p.detach() for p in sae.parameters()), k=k, scale=sae.scale)
    log = TrainingLog(steps, epochs * n, seconds, last_loss, last_aux, int((since_fired >= dead_tokens).sum()))
    return trained, log


def sae_metrics(sae: TopKSAE, x, n_boot: int = 0, seed: int = 0) -> dict:
    """Explained variance, L0 and dead fraction of ``sae`` on held-out activations x [W, T, d] (W windows of T
    tokens; [N, d] counts as N windows of one token). With ``n_boot`` > 0, also ``<metric>_low`` / ``_high``:
    95% percentile intervals over windows resampled with replacement (each metric recomputed exactly)."""
    import torch

    x = x.float()
    if x.dim() == 2:
        x = x[:, None, :]
    windows, tokens, _ = x.shape
    with torch.no_grad():
        flat = x.reshape(-1, x.shape[-1])
        z = sae.encode(flat)
        error = (flat - sae.decode(z)).pow(2).sum(dim=-1).reshape(windows, tokens).sum(dim=1).double()
        active = (z > 0).reshape(windows, tokens, -1)
        fired = active.sum(dim=(1, 2)).double()  # [W]
        ever = active.any(dim=1)  # [W, m]
        sum_sq = x.double().pow(2).sum(dim=(1, 2))  # [W]
        sums = x.double().sum(dim=1)  # [W, d]

    def metrics(weights):  # weights [B, W] window multiplicities
        n = weights.sum(dim=1) * tokens
        total_variance = weights @ sum_sq - (weights @ sums).pow(2).sum(dim=1) / n
        dead = ((weights > 0).double() @ ever.double() == 0).double().mean(dim=1)
        return 1 - (weights @ error) / total_variance, (weights @ fired) / n, dead

    ev, l0, dead = metrics(torch.ones(1, windows, dtype=torch.float64))
    out = {"explained_variance": float(ev[0]), "l0": float(l0[0]), "dead_fraction": float(dead[0]),
           "eval_tokens": int(windows * tokens)}
    if n_boot > 0:
        from codedyn.resample import multiplicities

        weights = torch.as_tensor(multiplicities(np.random.default_rng(seed), windows, n_boot), dtype=torch.float64)
        for name, reps in zip(("explained_variance", "l0", "dead_fraction"), metrics(weights.to(x.device)),
                              strict=True):
            low, high = np.quantile(reps.cpu().numpy(), [0.025, 0.975])
            out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def decoder_cosines(current: TopKSAE, previous: TopKSAE) -> np.ndarray:
    """Cosine between each latent's decoder row now and in ``previous`` (same latent index): [m]."""
    import torch

    a, b = current.W_dec.float().cpu(), previous.W_dec.float().cpu()
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()


def latent_name(layer: int, latent: int) -> str:
    """``L<layer>.SAE<latent>``: the component name of one SAE latent (beside heads ``L<l>.H<h>`` and ``L<l>.MLP``)."""
    return f"L{layer}.SAE{latent}"


def sae_latent_names(layer: int, width: int) -> list[str]:
    """``L<layer>.SAE<j>`` for every latent j of the SAE at that layer."""
    return [latent_name(layer, j) for j in range(width)]


@functools.cache
def _encoder_type():
    import torch

    class SaeEncoder(torch.nn.Module):
        """A :class:`TopKSAE`'s encoder as a module (no parameters of its own: the SAE's tensors stay where they
        are)."""

        def __init__(self, sae: TopKSAE) -> None:
            super().__init__()
            self.sae = sae

        def forward(self, x):
            return self.sae.encode(x)

    return SaeEncoder


@dataclass(frozen=True)
class SaeLatentMeans:
    """Observable φ(model): [width] mean SAE latent activation at ``layer``'s resid_post over the real tokens of a
    fixed probe batch (for susceptibilities of SAE features). No gradients; hooks removed in ``finally``."""

    sae: TopKSAE
    layer: int
    input_ids: Any  # LongTensor [B, T]
    attention_mask: Any  # LongTensor [B, T], 1 on real tokens

    def __call__(self, model):
        import torch

        from codedyn.models.activations import resid_post

        with torch.no_grad():
            resid = resid_post(model, [self.layer], self.input_ids, self.attention_mask)[self.layer]  # [B, T, D]
            sae = self.sae if self.sae.W_enc.device == resid.device else self.sae.to(resid.device)
            z = sae.encode(resid.reshape(-1, resid.shape[-1]).float())  # [B * T, m]
            mask = self.attention_mask.reshape(-1).to(z.dtype)
            return (z * mask[:, None]).sum(dim=0) / mask.sum()

    def names(self) -> list[str]:
        return sae_latent_names(self.layer, self.sae.width)
