"""`codedyn run` end to end on a local folder of Llama-family checkpoints (grouped-query attention, gated MLP), laid
out as a transformers Trainer writes them: every unit and analysis through the real loading path, the full report,
and the component names of that architecture in the susceptibility table."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from codedyn.cli import app
from tests.arch_models import tiny_model, tiny_tokenizer
from tests.pipeline_support import write_preset

STEPS = (10, 20, 40)


@pytest.fixture()
def llama_folder(tmp_path):
    root = tmp_path / "llama-run"
    for step in STEPS:
        # A long context so that HumanEval mutants fit the readout window of this byte-level tokenizer.
        tiny_model("llama", seed=step, context=1024).save_pretrained(root / f"checkpoint-{step}")
    tiny_tokenizer().save_pretrained(root)
    return root


def test_codedyn_run_on_a_llama_checkpoint_folder_writes_the_full_report(llama_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEDYN_HOME", str(tmp_path / "home"))
    preset = write_preset(tmp_path / "preset.yaml", suite={"name": str(llama_folder), "steps": list(STEPS)})
    run = tmp_path / "run"
    outcome = CliRunner().invoke(app, ["run", "--preset", str(preset), "--out", str(run)])
    assert outcome.exit_code == 0, outcome.output

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["steps"] == list(STEPS)
    influence = pd.read_parquet(run / "influence" / "influence.parquet")
    assert sorted(influence["step"].unique()) == list(STEPS)
    chi = pd.read_parquet(run / "susceptibility" / "susceptibility.parquet")
    components = set(chi["component"])
    # Llama's table entry: 4 query heads per layer (2 key/value groups) and a gated MLP, 2 layers.
    assert {f"L{layer}.H{head}" for layer in (0, 1) for head in range(4)} <= components
    assert {"L0.MLP", "L1.MLP"} <= components
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="answer"' in page and "Experiment 2" in page and "Experiment 3" in page
    assert str(llama_folder) in page or llama_folder.name in page
