"""Weight restrictions of GPT-NeoX components (devinterp masks, checked) and the weight-restricted estimator end to
end on a tiny study: units per (checkpoint, component), resumption, the tidy table."""

import json

import numpy as np
import pandas as pd
import pytest

from codedyn.sampling.restricted import WeightRestrictionError, component_masks, devinterp_restriction
from tests.studies import sampled_descriptions

torch = pytest.importorskip("torch")


def _tiny_neox(tie: bool = False, seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=32, tie_word_embeddings=tie)
    return GPTNeoXForCausalLM(config).eval()


def _head_inputs(model, ids):
    """The merged per-head attention outputs of every layer (the input of attention.dense): [layers, B, T, H*d]."""
    captured = []
    hooks = [layer.attention.dense.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
             for layer in model.gpt_neox.layers]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def test_component_names_map_to_devinterp_restrictions():
    assert devinterp_restriction("L0.H1") == "l0h1" and devinterp_restriction("L1.MLP") == "l1 mlp"
    assert devinterp_restriction("full") == "full"
    with pytest.raises(WeightRestrictionError, match="unknown component"):
        devinterp_restriction("L0.attn")


@pytest.mark.parametrize("layer,head", [(0, 0), (0, 1), (1, 1)])
def test_head_mask_moves_exactly_that_heads_output(layer, head):
    """Perturbing the masked query-key-value entries changes head ``head``'s output of layer ``layer`` and no other
    head of that layer; the output-projection mask is that head's d_head columns."""
    model = _tiny_neox()
    masks = component_masks(model, f"L{layer}.H{head}")
    prefix = f"gpt_neox.layers.{layer}.attention."
    assert set(masks) == {prefix + "query_key_value.weight", prefix + "query_key_value.bias", prefix + "dense.weight"}
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    before = _head_inputs(model, ids)[layer]
    params = dict(model.named_parameters())
    with torch.no_grad():
        for suffix in ("query_key_value.weight", "query_key_value.bias"):
            param = params[prefix + suffix]
            param.add_(torch.randn_like(param) * masks[prefix + suffix])
    after = _head_inputs(model, ids)[layer]
    d_head = 16 // 2
    changed = [(after - before)[..., h * d_head:(h + 1) * d_head].abs().max().item() for h in range(2)]
    assert changed[head] > 1e-3 and changed[1 - head] == 0
    columns = masks[prefix + "dense.weight"].any(dim=0).nonzero().flatten().tolist()
    assert columns == list(range(head * d_head, (head + 1) * d_head))


def test_mlp_and_unembed_masks_are_whole_tensors():
    model = _tiny_neox()
    mlp = component_masks(model, "L1.MLP")
    assert set(mlp) == {f"gpt_neox.layers.1.mlp.{n}" for n in
                        ("dense_h_to_4h.weight", "dense_h_to_4h.bias", "dense_4h_to_h.weight", "dense_4h_to_h.bias")}
    assert all(m is None for m in mlp.values())
    # devinterp 2.0.1 looks for embed_out.weight (transformers < 5): its own unembed restriction comes back empty
    from devinterp.slt.weight_restrictions import create_param_masks

    assert create_param_masks(model, "unembed") == {}
    assert component_masks(model, "unembed") == {"lm_head.weight": None}
    assert component_masks(model, "full") is None


def test_tied_unembedding_and_empty_masks_are_refused(monkeypatch):
    with pytest.raises(WeightRestrictionError, match="tied"):
        component_masks(_tiny_neox(tie=True), "unembed")
    with pytest.raises(WeightRestrictionError, match="out of range"):
        component_masks(_tiny_neox(), "L5.H0")
    import devinterp.slt.weight_restrictions as restrictions

    monkeypatch.setattr(restrictions, "create_param_masks", lambda model, restriction: {})
    with pytest.raises(WeightRestrictionError, match="selects no parameter"):
        component_masks(_tiny_neox(), "L0.MLP")
    monkeypatch.setattr(restrictions, "create_param_masks",
                        lambda model, restriction: {"gpt_neox.layers.0.attention.dense.weight": torch.zeros(16, 16,
                                                                                                            dtype=bool)})
    with pytest.raises(WeightRestrictionError, match="empty or misshapen"):
        component_masks(_tiny_neox(), "L0.H0")


def test_restricted_sampler_moves_only_the_components_weights():
    """A real GPT-NeoX restricted chain: the masked head weights move, every other weight stays bitwise at w*."""
    from codedyn.config import SamplingConfig
    from codedyn.sampling.sgld import sample_posterior

    model = _tiny_neox()
    masks = component_masks(model, "L1.H0")
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}

    def displacement(sampler_model):  # [moved outside the mask, moved inside the mask]
        outside, inside = 0.0, 0.0
        for name, param in sampler_model.named_parameters():
            moved = (param - reference[name]).abs()
            if name not in masks:
                selected = torch.zeros_like(moved, dtype=bool)
            elif masks[name] is None:
                selected = torch.ones_like(moved, dtype=bool)
            else:
                selected = masks[name].to(bool)
            inside = max(inside, float(moved[selected].max()) if selected.any() else 0.0)
            outside = max(outside, float(moved[~selected].max()) if (~selected).any() else 0.0)
        return torch.tensor([outside, inside])

    windows = torch.randint(0, 50, (8, 13), generator=torch.Generator().manual_seed(2))
    config = SamplingConfig(chains=1, draws=3, burn_in=2, batch_size=4, lr=1e-4)
    traces = sample_posterior(model, windows, displacement, config, param_masks=masks)
    moved = traces["sample_loss"].values[0]
    assert (moved[:, 0] == 0).all() and (moved[:, 1] > 0).all()
    assert all(torch.equal(p, reference[n]) for n, p in model.named_parameters())  # the caller's model untouched


# ----------------------------------------------------------------------------------------------- tiny study, e2e

@pytest.fixture(scope="module")
def restricted_study(tmp_path_factory, shared_home):
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from codedyn.experiments.susceptibility import run_susceptibility
    from tests.studies import TINY_STUDY

    home = shared_home  # the tiny study's dataset and toy suite, built once per session
    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(home))
    overrides = {**TINY_STUDY, "suite": {"steps": [4, 12]},
                 "susceptibility": {"estimator": "weight_restricted", "draws": 6, "burn_in": 2, "sae_latents": 0,
                                    "observation_windows": 8, "components": ["L0.H0", "L1.H1", "L1.MLP"]}}
    study = prepare_study(load_config("default", overrides), tmp_path_factory.mktemp("restricted") / "run")
    yield study, run_susceptibility(study)
    mp.undo()


def test_restricted_table_and_units(restricted_study):
    study, result = restricted_study
    assert result.estimator == "weight_restricted"
    table = pd.read_parquet(result.folder / "susceptibility_weight_restricted.parquet")
    assert set(table["estimator"]) == {"weight_restricted"}
    assert set(table["component"]) == {"L0.H0", "L1.H1", "L1.MLP"}
    assert sorted(set(table["step"])) == [4, 12]
    assert {"correct", "incorrect"} <= set(table["distribution"]) and set(table["variant"]) == {"raw", "standardised"}
    assert np.isfinite(table[["chi", "low", "high"]]).all().all()
    assert (table["low"] <= table["chi"] + 1e-12).all() and (table["chi"] <= table["high"] + 1e-12).all()
    responders = pd.read_parquet(result.folder / "opposite_responders_weight_restricted.parquet")
    assert len(responders) == 2 * 3
    assert (result.folder / "susceptibility_trajectories_weight_restricted.png").is_file()
    units = sorted(p.name for p in (study.run_dir / "units").glob("restricted-step*"))
    assert len(units) == 2 * 4  # (full + 3 components) per checkpoint
    assert {u.rsplit("-", 1)[0] for u in units} == {f"restricted-step{s}-{c}" for s in (4, 12)
                                                    for c in ("full", "L0.H0", "L1.H1", "L1.MLP")}
    record = json.loads((study.run_dir / "units" / units[0] / "unit.json").read_text())
    assert record["kind"] == "restricted" and record["model_components"][:3] == ["L0.H0", "L0.H1", "L0.MLP"]


def test_restricted_estimator_resumes_after_a_crash(restricted_study, monkeypatch):
    """A unit without its completed marker (a crash mid-sweep) is the only one sampled again."""
    from codedyn.experiments.susceptibility import run_susceptibility

    study, result = restricted_study
    unit = next((study.run_dir / "units").glob("restricted-step12-L1.H1-*"))
    (unit / "completed").unlink()
    calls = sampled_descriptions(monkeypatch)
    again = run_susceptibility(study)
    assert calls == ["step 12 L1.H1"]
    pd.testing.assert_frame_equal(again.table, result.table)  # same seed, same draws


def test_analysis_without_units_says_what_to_run(restricted_study, tmp_path):
    from dataclasses import replace

    from codedyn.experiments.susceptibility import compute_susceptibility

    study, _ = restricted_study
    with pytest.raises(FileNotFoundError, match="--estimator weight_restricted"):
        compute_susceptibility(replace(study, run_dir=tmp_path / "empty"))


def test_cli_selects_the_estimator(restricted_study, tmp_path, monkeypatch, shared_home):
    """`codedyn susceptibility --estimator weight_restricted --components ...`: the stored units are found (nothing
    sampled: same config), the summary names the estimator; an unknown estimator is one clear error."""
    import yaml
    from typer.testing import CliRunner

    import codedyn.sampling.sgld as sgld
    from codedyn.cli import app
    from tests.studies import TINY_STUDY

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored restricted unit was sampled again")

    monkeypatch.setattr(sgld, "sample_posterior", forbidden)
    study, result = restricted_study
    monkeypatch.setenv("CODEDYN_HOME", str(shared_home))  # the study's dataset and suite caches
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(json.loads(json.dumps(
        {**TINY_STUDY, "suite": {"steps": [4, 12]},
         "susceptibility": {"burn_in": 2, "observation_windows": 8, "sae_latents": 0}}))))
    args = ["susceptibility", "--preset", str(preset), "--out", str(study.run_dir), "--estimator", "weight_restricted",
            "--components", "L0.H0,L1.H1,L1.MLP", "--restricted-draws", "6"]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert "weight_restricted estimator:" in outcome.output
    assert outcome.stdout.strip().endswith(str(result.folder))
    bad = CliRunner().invoke(app, [*args[:5], "--estimator", "bayes"])
    assert bad.exit_code == 2 and "susceptibility.estimator" in bad.output
