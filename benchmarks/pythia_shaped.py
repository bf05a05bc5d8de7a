"""A Pythia-shaped study end to end through the real loading path: `codedyn run --preset pythia-14m`, reduced draws.

    python benchmarks/pythia_shaped.py [--device cpu|cuda] [--work DIR] [--problems 12] [--check-160m]

What it does, and why each step is the real one:

1. trains a byte-level BPE tokenizer of Pythia's vocabulary size (50304, its padded embedding size; the BPE itself
   stops where the corpus runs out of merges) on the standard library's training split (codedyn's toy tokenizer
   recipe, :func:`codedyn.models.toy.train_tokenizer`);
2. writes random-weight GPT-NeoX checkpoints with pythia-14m's exact configuration (the hub's ``config.json``:
   6 layers, width 128, 4 heads, MLP 512, vocabulary 50304, rotary 0.25, base 10000, 2048 positions, parallel
   residual, untied unembedding; its parameter count is checked against the published 14,067,712) as revisions
   ``step1000``, ``step2000`` and ``step143000`` of ``EleutherAI/pythia-14m`` into a fresh HF hub cache;
3. runs ``python -m codedyn.cli run --preset <pythia-14m with reduced draws>`` in a subprocess with ``HF_HUB_CACHE``
   pointing there and ``HF_HUB_OFFLINE=1``: the preset's suite name resolves to the Pythia suite, whose revisions load
   through ``from_pretrained(..., revision=)`` exactly as on a machine holding the real checkpoints;
4. prints every unit's wall time, model-compute share and peak memory (from the run's ``timings.json``), the FLOPs
   ``benchmarks/flops.py`` counts for each unit at these settings, the FLOP rate that implies, and the projection
   of the same units to pythia-160m at that rate. ``--check-160m`` then measures pythia-160m-shaped units (two
   random revisions, the same settings; on a GPU) and ``--tiny-160m-from <earlier --json>`` at smaller settings (on
   a CPU), so that the projection is checked against a measurement.

Random weights make the estimates meaningless; the costs (shapes, tokens, loading, every experiment's code path) are
the real ones. ``--json PATH`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = (1000, 2000, 143000)
TINY_STEPS = (1000, 143000)  # a study compares at least two checkpoints
VOCAB = 50304
# config.json of EleutherAI/pythia-14m and -160m on the hub (the fields that shape the model).
PYTHIA_CONFIGS = {
    "pythia-14m": {"hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 512,
                   "published": 14_067_712},
    "pythia-160m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 3072, "published": 162_322_944},
}
COMMON = {"vocab_size": VOCAB, "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
          "use_parallel_residual": True, "tie_word_embeddings": False, "layer_norm_eps": 1e-5, "hidden_act": "gelu",
          "bos_token_id": 0, "eos_token_id": 0, "initializer_range": 0.02, "attention_dropout": 0.0,
          "hidden_dropout": 0.0}


def reduced_overrides(device: str, problems: int) -> dict:
    """pythia-14m's preset with chains, draws, batch, read-out problems and SAE tokens cut so that one CPU core runs
    a checkpoint in a few minutes; every experiment and every unit kind stays in, and every tensor keeps Pythia's
    shapes (vocabulary, width, 65-token sampling windows, 128-token SAE windows)."""
    return {
        "name": "pythia-shaped",
        "dataset": {"limit_problems": problems, "candidates_per_operator": 1},
        "suite": {"steps": list(STEPS), "device": device},
        "sampling": {"chains": 2, "draws": 4, "burn_in": 4, "batch_size": 8, "max_problems": 8,
                     "reference_batches": 2, "sampling_windows": 256, "n_bootstrap": 100},
        "emergence": {"train_tokens": 4096, "epochs": 1, "eval_windows": 8, "general_windows": 32,
                      "batch_size": 1024, "dead_tokens": 4096, "n_bootstrap": 100},
        "embryology": {"max_tokens": 200, "n_epochs": 30, "anchored_epochs": 10, "n_bootstrap": 20},
        "executor": {"cpus_per_task": 1, "gpus_per_task": 0},
    }


def tiny_overrides(device: str, problems: int) -> dict:
    """Fewer steps again, for measuring one pythia-160m-shaped checkpoint on a CPU in minutes."""
    base = reduced_overrides(device, problems)
    return {**base, "suite": {"steps": list(TINY_STEPS), "device": device},
            "sampling": {**base["sampling"], "chains": 1, "draws": 2, "burn_in": 2, "max_problems": 4},
            "emergence": {**base["emergence"], "train_tokens": 2048, "eval_windows": 4, "general_windows": 16}}


def rates_from(path: Path, on_gpu: bool) -> dict[str, float]:
    """The slowest GFLOP/s of each unit kind in an earlier run's ``--json`` output."""
    if not path.is_file():
        print(f"{path} does not exist (yet): no projection to compare with")
        return {}
    earlier = json.loads(path.read_text())
    rates: dict[str, float] = {}
    for row in earlier["units"]:
        if row["kind"] in earlier["flops_per_unit"]:
            clock = row["seconds"] if on_gpu else row["cpu_seconds"]
            rate = earlier["flops_per_unit"][row["kind"]] / 1e9 / clock
            rates[row["kind"]] = min(rates.get(row["kind"], rate), rate)
    return rates


def write_preset(path: Path, base: str, overrides: dict) -> Path:
    import yaml

    from codedyn.config import load_config

    path.write_text(yaml.safe_dump(load_config(base, overrides).model_dump(mode="json"), sort_keys=False))
    return path


def pythia_model(size: str, seed: int):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    shape = {k: v for k, v in PYTHIA_CONFIGS[size].items() if k != "published"}
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**shape, **COMMON))
    n = sum(p.numel() for p in model.parameters())
    if n != PYTHIA_CONFIGS[size]["published"]:
        raise SystemExit(f"{size}-shaped model has {n:,} parameters, the published model {PYTHIA_CONFIGS[size]}")
    return model


def build_checkpoints(hub_cache: Path, size: str, steps, tokenizer) -> float:
    from codedyn.models.suite import write_revision

    started = time.perf_counter()
    for step in steps:
        write_revision(hub_cache, f"EleutherAI/{size}", step, pythia_model(size, seed=step), tokenizer)
    return time.perf_counter() - started


def train_pythia_tokenizer(folder: Path):
    """The BPE tokenizer (cached in ``folder``: training it is the slow part of the setup)."""
    from transformers import PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder), 0.0
    from codedyn.data.corpus import CodeCorpus
    from codedyn.models.toy import train_tokenizer

    started = time.perf_counter()
    tokenizer = train_tokenizer(CodeCorpus.stdlib().texts("train"), VOCAB)
    tokenizer.save_pretrained(folder)
    return tokenizer, time.perf_counter() - started


def run_study(preset: Path, run_dir: Path, hub_cache: Path, home: Path) -> float:
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CODEDYN_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "codedyn.cli", "run", "--preset", str(preset), "--out",
                             str(run_dir)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"codedyn run failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return time.perf_counter() - started


def unit_flops(preset: Path) -> dict[str, float]:
    """FLOPs of one checkpoint's units as benchmarks/flops.py counts them: ``posterior`` (sampling + read-outs)
    and ``sae`` (activation harvest + SAE training)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flops import project

    p = project(str(preset))
    return {"posterior": p["per_checkpoint_sampling"], "sae": p["harvest"] + p["sae_train"]}


def unit_table(run_dir: Path) -> list[dict]:
    timings = json.loads((run_dir / "timings.json").read_text())
    rows = []
    for unit in timings["units"]:
        if unit.get("cached"):
            continue
        rows.append({"unit": unit["unit"], "kind": unit["kind"], "seconds": unit["seconds"],
                     "cpu_seconds": unit["cpu_seconds"],
                     "model_share": unit["model_seconds"] / unit["seconds"] if unit["seconds"] else 0.0,
                     "peak_rss_mb": unit["peak_rss_mb"], "peak_gpu_mb": unit.get("peak_gpu_mb")})
    return rows


def stage_table(run_dir: Path) -> list[dict]:
    timings = json.loads((run_dir / "timings.json").read_text())
    return [{"stage": s["stage"], "seconds": s["seconds"], "cpu_seconds": s["cpu_seconds"],
             "peak_rss_mb": s["peak_rss_mb"]} for s in timings["stages"]]


def print_tables(out: dict, flops: dict, on_gpu: bool) -> dict[str, list[float]]:
    """The stage and unit tables; returns the achieved GFLOP/s of each unit kind. On a CPU the rate is per CPU
    second (the 1-thread units' CPU time is what they cost on an idle core); on a GPU per wall second."""
    print(f"{'stage':<24}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}")
    for stage in out["stages"]:
        print(f"{stage['stage']:<24}{stage['seconds']:>9.1f}{stage['cpu_seconds']:>9.1f}{stage['peak_rss_mb']:>13.0f}")
    print(f"{'unit':<24}{'wall s':>9}{'CPU s':>9}{'model':>8}{'peak RSS MB':>13}{'peak GPU MB':>13}{'GFLOP':>10}"
          f"{'GFLOP/s':>9}")
    rates: dict[str, list[float]] = {}
    for row in out["units"]:
        gflop = flops[row["kind"]] / 1e9 if row["kind"] in flops else float("nan")
        clock = row["seconds"] if on_gpu else row["cpu_seconds"]
        rate = gflop / clock if clock else float("nan")
        if row["kind"] in flops:
            rates.setdefault(row["kind"], []).append(rate)
        gpu = f"{row['peak_gpu_mb']:.0f}" if row.get("peak_gpu_mb") is not None else "-"
        print(f"{row['unit']:<24}{row['seconds']:>9.1f}{row['cpu_seconds']:>9.1f}{row['model_share']:>8.0%}"
              f"{row['peak_rss_mb']:>13.0f}{gpu:>13}{gflop:>10.1f}{rate:>9.2f}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/codedyn-pythia-shaped"),
                        help="holds the tokenizer, the HF cache, the codedyn cache and the runs")
    parser.add_argument("--problems", type=int, default=12, help="HumanEval problems in the dataset")
    parser.add_argument("--check-160m", action="store_true", help="also measure a pythia-160m-shaped unit")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--tiny-160m-from", type=Path,
                        help="instead: measure pythia-160m-shaped checkpoints at tiny settings and compare them "
                             "with the projection from the pythia-14m rates in this earlier --json output")
    args = parser.parse_args()
    if args.tiny_160m_from:
        return tiny_160m(args)

    import torch

    torch.set_num_threads(1)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 1) for x in os.getloadavg()]
    tokenizer, tokenizer_s = train_pythia_tokenizer(work / "tokenizer")
    hub = work / "hf"
    write_s = build_checkpoints(hub, "pythia-14m", STEPS, tokenizer)
    preset = write_preset(work / "pythia-shaped.yaml", "pythia-14m", reduced_overrides(args.device, args.problems))
    run_dir = work / f"run-14m-{int(time.time())}"
    total_s = run_study(preset, run_dir, hub, work / "home")
    units, flops = unit_table(run_dir), unit_flops(preset)
    out = {"device": args.device, "tokenizer_seconds": tokenizer_s, "tokenizer_vocab": len(tokenizer),
           "write_checkpoints_seconds": write_s, "run_seconds": total_s, "stages": stage_table(run_dir),
           "units": units, "flops_per_unit": flops}

    print(f"tokenizer: {len(tokenizer)} tokens ({tokenizer_s:.0f} s to train; cached afterwards); 3 pythia-14m "
          f"revisions written in {write_s:.1f} s; `codedyn run` {total_s:.0f} s on {args.device}")
    print(f"load average before / after: {load_before} / {[round(x, 1) for x in os.getloadavg()]} (a busy machine "
          "inflates wall time, CPU time much less: on a CPU the FLOP rates are per CPU second, on a GPU per wall "
          "second)")
    rates = print_tables(out, flops, on_gpu=args.device != "cpu")

    # The same reduced settings on pythia-160m: FLOPs by the same count, time at the rate each unit kind achieved.
    preset_160 = write_preset(work / "pythia-160m-shaped.yaml", "pythia-160m",
                              {**reduced_overrides(args.device, args.problems),
                               "suite": {"steps": list(TINY_STEPS), "device": args.device}})
    flops_160 = unit_flops(preset_160)
    projection = {kind: flops_160[kind] / (1e9 * min(r)) for kind, r in rates.items() if kind in flops_160}
    out["projection_160m_seconds"] = projection
    out["flops_per_unit_160m"] = flops_160
    print(f"pythia-160m at the same settings, projected from the slowest 14m rate of each unit kind "
          f"({'wall' if args.device != 'cpu' else 'CPU'} seconds): "
          + ", ".join(f"{kind} {flops_160[kind] / 1e9:.0f} GFLOP -> {s:.0f} s" for kind, s in projection.items()))
    if args.check_160m:
        build_checkpoints(hub, "pythia-160m", TINY_STEPS, tokenizer)
        run_160 = work / f"run-160m-{int(time.time())}"
        run_study(preset_160, run_160, hub, work / "home")
        measured = {row["kind"]: row for row in unit_table(run_160)}
        out["measured_160m"] = list(measured.values())
        for kind, seconds in projection.items():
            if kind in measured:
                got = measured[kind]["seconds" if args.device != "cpu" else "cpu_seconds"]
                print(f"pythia-160m {kind} unit: measured {got:.0f} s (peak RSS {measured[kind]['peak_rss_mb']:.0f}"
                      f" MB), projected {seconds:.0f} s: measured / projected = {got / seconds:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def tiny_160m(args) -> None:
    """Two pythia-160m-shaped checkpoints through `codedyn run` at :func:`tiny_overrides`, each unit against the
    FLOP count of its kind divided by the rate the pythia-14m units achieved."""
    import torch

    torch.set_num_threads(1)
    on_gpu = args.device != "cpu"
    tokenizer, _ = train_pythia_tokenizer(args.work / "tokenizer")
    hub = args.work / "hf"
    write_s = build_checkpoints(hub, "pythia-160m", TINY_STEPS, tokenizer)
    preset = write_preset(args.work / "pythia-160m-tiny.yaml", "pythia-160m", tiny_overrides(args.device,
                                                                                          args.problems))
    run_dir = args.work / f"run-160m-tiny-{int(time.time())}"
    total_s = run_study(preset, run_dir, hub, args.work / "home")
    out = {"device": args.device, "write_checkpoints_seconds": write_s, "run_seconds": total_s,
           "stages": stage_table(run_dir), "units": unit_table(run_dir), "flops_per_unit": unit_flops(preset)}
    print(f"pythia-160m-shaped revisions written in {write_s:.1f} s; `codedyn run` {total_s:.0f} s on "
          f"{args.device}")
    print_tables(out, out["flops_per_unit"], on_gpu)
    rates = rates_from(args.tiny_160m_from, on_gpu)
    out["projected_seconds"] = {}
    for row in out["units"]:
        if row["kind"] in rates:
            projected = out["flops_per_unit"][row["kind"]] / 1e9 / rates[row["kind"]]
            got = row["seconds"] if on_gpu else row["cpu_seconds"]
            out["projected_seconds"][row["kind"]] = projected
            print(f"pythia-160m {row['kind']} unit: measured {got:.0f} s, projected from the 14m rate "
                  f"{rates[row['kind']]:.2f} GFLOP/s: {projected:.0f} s (measured / projected {got / projected:.2f})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
