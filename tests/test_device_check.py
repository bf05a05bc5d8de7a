"""The device check stops with one sentence where there is no CUDA device; the Pythia-shaped benchmark's models
have pythia-14m's (and pythia-160m's) exact published parameter counts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the check would run")
def test_device_check_without_cuda_is_one_sentence():
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh")], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert result.returncode == 1
    assert "device_check: no CUDA device is visible to torch" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_pythia_shaped_checkpoints_have_the_published_shape():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pythia_shaped import pythia_model

    model = pythia_model("pythia-14m", seed=0)  # raises unless it has exactly 14,067,712 parameters
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.vocab_size,
            config.max_position_embeddings) == (6, 128, 4, 50304, 2048)
    assert config.rope_parameters["partial_rotary_factor"] == 0.25  # transformers 5's name for rotary_pct
    assert config.use_parallel_residual and not config.tie_word_embeddings
