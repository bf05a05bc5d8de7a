"""FLOP-count projection of a Pythia study's cost in GPU-hours, with the arithmetic shown.

Usage: ``python benchmarks/flops.py [--preset pythia-160m] [--mfu 0.4]`` (default: all three Pythia presets).

Architecture (hard-coded, GPT-NeoX; source: Biderman et al. 2023, "Pythia: A Suite for Analyzing Large Language
Models Across Training and Scaling", Table 1, and the ``config.json`` of each EleutherAI/pythia-* model on the
HuggingFace hub: ``num_hidden_layers``, ``hidden_size``, ``intermediate_size`` = 4 d, ``vocab_size`` = 50304).
Parameter counts follow from it (checked against the published totals in ``main``):

* per layer: QKV 3d² + 3d, attention output d² + d, MLP 8d² + 5d, two LayerNorms 4d -> 12d² + 13d;
* non-embedding N = n_layer (12d² + 13d) + 2d (final LayerNorm); embeddings 2 V d (untied in and out).

FLOPs per token (PaLM appendix B convention, a multiply-add = 2 FLOPs, T the sequence length):

* forward + backward (one SGLD step): 6 N_c + 12 n_layer d T, with N_c = N + V d (the unembedding matmul counts,
  the embedding lookup does not) and 12 n_layer d T the attention scores and values (QK^T and AV, forward 4 n_layer
  d T, backward twice that);
* forward only (read-outs, observables, reference losses, SAE activation harvest): 2 N_c + 4 n_layer d T;
* TopK SAE on d-dim activations with W latents, k active: encoder 2 d W, decoder 2 k d, times 3 for forward +
  backward, per token and epoch; the optimizer's elementwise work is ignored.

Per checkpoint: chains x (burn_in + draws x steps_between_draws) SGLD steps of batch_size x window_length tokens;
per kept draw a read-out of every read-out sample (max_problems x (1 + mutants_per_problem) samples, counted at
max_readout_tokens each, default the model's 2048-token context: an upper bound), whose forward passes also give
the per-program observables (head norms as quadratic forms with each head's d_head x d_head Gram matrix, 2·d·d_head
per token and layer with d_head = 64, an upper bound for these sizes; MLP norms 2·d); once per checkpoint the
reference losses (reference_batches x batch_size windows) and the initial read-out.
SAE (Experiment 2): harvest train_tokens activations (a forward pass) and train epochs passes, per read layer.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# name: (n_layer, d_model, published total parameters)
PYTHIA = {
    "pythia-14m": (6, 128, 14_067_712),
    "pythia-70m": (6, 512, 70_426_624),
    "pythia-160m": (12, 768, 162_322_944),
}
VOCAB = 50304
D_HEAD = 64  # pythia-70m and -160m (14m: 32), for the observables' quadratic forms

# Peak dense throughput, FLOP/s (vendor data sheets: NVIDIA H100 SXM5, A100 SXM4 80GB).
PEAK = {
    "H100 bf16": 989e12,
    "A100 bf16": 312e12,
    "H100 fp32": 67e12,
    "A100 fp32": 19.5e12,
}

# Experiment 2 defaults used when the config has no ``emergence`` section (TopK SAE, 8x width, 2 layers read).
SAE_DEFAULTS = {"expansion": 8, "k": 8, "train_tokens": 98_304, "epochs": 3, "layers": 2, "window_length": 64}


@dataclass(frozen=True)
class Arch:
    n_layer: int
    d: int
    published: int

    @property
    def non_embedding(self) -> int:
        return self.n_layer * (12 * self.d**2 + 13 * self.d) + 2 * self.d

    @property
    def total(self) -> int:
        return self.non_embedding + 2 * VOCAB * self.d

    @property
    def compute(self) -> int:
        """Parameters that take part in matmuls per token: non-embedding + the unembedding."""
        return self.non_embedding + VOCAB * self.d

    def train_flops_per_token(self, t: int) -> float:
        return 6 * self.compute + 12 * self.n_layer * self.d * t

    def forward_flops_per_token(self, t: int) -> float:
        return 2 * self.compute + 4 * self.n_layer * self.d * t


def _sae_settings(config, d: int) -> dict:
    """Experiment 2's settings from the config's ``emergence`` section when it has one, else SAE_DEFAULTS."""
    emergence = getattr(config, "emergence", None)
    get = (lambda name, default: getattr(emergence, name, default)) if emergence is not None else (
        lambda name, default: default)
    layers = get("layers", None)
    return {
        "width": get("width", SAE_DEFAULTS["expansion"] * d),
        "k": get("k", SAE_DEFAULTS["k"]),
        "train_tokens": get("train_tokens", SAE_DEFAULTS["train_tokens"]),
        "epochs": get("epochs", SAE_DEFAULTS["epochs"]),
        "layers": len(layers) if layers else SAE_DEFAULTS["layers"],
        "window_length": get("window_length", SAE_DEFAULTS["window_length"]),
    }


def project(preset: str) -> dict:
    """The FLOP budget of one preset, term by term."""
    from codedyn.config import load_config

    config = load_config(preset)
    arch = Arch(*PYTHIA[config.suite.name])
    s = config.sampling
    checkpoints = len(config.suite.steps)
    steps_per_chain = s.burn_in + s.draws * s.steps_between_draws
    n_problems = s.max_problems if s.max_problems is not None else 164
    readout_samples = n_problems * (1 + config.dataset.mutants_per_problem)
    t_read = s.max_readout_tokens or 2048  # Pythia's training context when no cap is set

    sgld_step = s.batch_size * s.window_length * arch.train_flops_per_token(s.window_length)
    readout = readout_samples * t_read * arch.forward_flops_per_token(t_read)
    observables = readout_samples * t_read * arch.n_layer * (2 * arch.d * D_HEAD + 2 * arch.d)
    reference = s.sampling_windows * s.window_length * arch.forward_flops_per_token(s.window_length)
    per_chain = steps_per_chain * sgld_step + s.draws * (readout + observables)
    per_checkpoint_sampling = s.chains * per_chain + reference + readout + observables

    sae = _sae_settings(config, arch.d)
    width = sae["width"]
    harvest = sae["train_tokens"] * arch.forward_flops_per_token(sae["window_length"])
    sae_train = sae["layers"] * sae["epochs"] * sae["train_tokens"] * 3 * (2 * arch.d * width + 2 * sae["k"] * arch.d)
    per_checkpoint = per_checkpoint_sampling + harvest + sae_train

    # `codedyn calibrate` with the preset's grid: settings x checkpoints x chains x SGLD steps (+ a small read-out).
    cal = config.calibration
    n_settings = len(cal.lr) * len(cal.n_beta) * len(cal.localization)
    cal_steps = len(cal.steps) if cal.steps else 2
    cal_chains = cal.chains or max(2, s.chains)
    cal_per_chain = ((cal.burn_in if cal.burn_in is not None else s.burn_in) + (cal.draws or s.draws)) * sgld_step
    calibration = n_settings * cal_steps * cal_chains * cal_per_chain
    return {
        "preset": preset, "arch": arch, "sampling": s, "checkpoints": checkpoints, "steps_per_chain": steps_per_chain,
        "readout_samples": readout_samples, "t_read": t_read, "sgld_step": sgld_step, "readout": readout,
        "observables": observables, "reference": reference, "per_chain": per_chain,
        "per_checkpoint_sampling": per_checkpoint_sampling, "sae": sae, "sae_width": width, "harvest": harvest,
        "sae_train": sae_train, "per_checkpoint": per_checkpoint, "total": checkpoints * per_checkpoint,
        "n_settings": n_settings, "cal_steps": cal_steps, "cal_chains": cal_chains, "calibration": calibration,
    }


def _e(x: float) -> str:
    return f"{x:.3e}"


def report(p: dict, mfu: float) -> str:
    a, s = p["arch"], p["sampling"]
    lines = [
        f"## {p['preset']}: n_layer {a.n_layer}, d_model {a.d}, vocab {VOCAB}",
        "",
        f"- parameters: non-embedding N = {a.n_layer}·(12·{a.d}² + 13·{a.d}) + 2·{a.d} = {a.non_embedding:,}; "
        f"total N + 2·V·d = {a.total:,} (published {a.published:,}: "
        f"{'match' if a.total == a.published else 'MISMATCH'}); in matmuls N_c = N + V·d = {a.compute:,}",
        f"- SGLD step: {s.batch_size} x {s.window_length} tokens x (6·N_c + 12·{a.n_layer}·{a.d}·{s.window_length})"
        f" = {_e(p['sgld_step'])} FLOP",
        f"- read-out per draw: {p['readout_samples']} samples x {p['t_read']} tokens (upper bound) x "
        f"(2·N_c + 4·{a.n_layer}·{a.d}·{p['t_read']}) = {_e(p['readout'])} FLOP; per-program "
        f"observables in the same passes: {_e(p['observables'])} FLOP",
        f"- per chain: {p['steps_per_chain']} steps x SGLD step + {s.draws} draws x (read-out + observables) = "
        f"{_e(p['per_chain'])} FLOP",
        f"- per checkpoint, sampling: {s.chains} chains + reference losses {_e(p['reference'])} + initial read-out "
        f"= {_e(p['per_checkpoint_sampling'])} FLOP",
        f"- per checkpoint, SAE (Experiment 2): harvest {p['sae']['train_tokens']:,} tokens forward "
        f"{_e(p['harvest'])} + train {p['sae']['layers']} layer(s) x {p['sae']['epochs']} epochs x 3·(2·d·W + 2·k·d)"
        f" per token, W = {p['sae_width']}, k = {p['sae']['k']}: {_e(p['sae_train'])} FLOP",
        f"- study: {p['checkpoints']} checkpoints x {_e(p['per_checkpoint'])} = **{_e(p['total'])} FLOP**",
        f"- calibration (`codedyn calibrate`, the preset's grid): {p['n_settings']} settings x {p['cal_steps']} "
        f"checkpoints x {p['cal_chains']} chains x {p['steps_per_chain']} steps x SGLD step = "
        f"**{_e(p['calibration'])} FLOP** (read-outs of 8 samples per draw neglected)",
        "",
        f"| hardware | peak FLOP/s | study GPU-h at {100 * mfu:.0f}% MFU | at 10% MFU | calibration GPU-h at "
        f"{100 * mfu:.0f}% MFU | at 10% MFU |",
        "|---|---|---|---|---|---|",
    ]
    for name, peak in PEAK.items():
        hours = [x / (u * peak) / 3600 for x in (p["total"], p["calibration"]) for u in (mfu, 0.1)]
        lines.append(f"| {name} | {peak:.3g} | " + " | ".join(f"{h:.3g}" for h in hours) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", help="pythia-14m, pythia-70m, pythia-160m (repeatable)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model-FLOP utilisation (default 0.4)")
    args = parser.parse_args()
    for preset in args.preset or list(PYTHIA):
        print(report(project(preset), args.mfu))
        print()


if __name__ == "__main__":
    main()
