"""Component observables: per-head and MLP output norms against brute-force recomputation; hooks never leak."""

import pytest
import torch

from codedyn.models.hooks import ComponentNorms, component_names, forward_hooks
from tests.arch_models import one_head_norm  # the brute-force per-head norm, for every architecture


@pytest.fixture(scope="module")
def model_and_probe():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=32, max_position_embeddings=64, rotary_pct=0.25)
    model = GPTNeoXForCausalLM(config).eval()
    ids = torch.randint(0, 100, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # a padded row: pads must not count
    return model, ids, mask


def test_head_norms_match_one_head_at_a_time(model_and_probe):
    model, ids, mask = model_and_probe
    values = ComponentNorms(ids, mask)(model)
    names = component_names(model)
    assert len(values) == len(names) == 2 * (4 + 1)
    for layer in range(2):
        for head in range(4):
            got = float(values[names.index(f"L{layer}.H{head}")])
            assert got == pytest.approx(one_head_norm(model, ids, mask, layer, head), rel=1e-5)


def test_mlp_norm_matches_its_output(model_and_probe):
    model, ids, mask = model_and_probe
    captured = {}
    mlp = model.gpt_neox.layers[1].mlp
    with forward_hooks([(mlp, lambda m, a, o: captured.setdefault("o", o), False)]), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    per_row = (captured["o"].norm(dim=-1) * mask).sum(dim=1) / mask.sum(dim=1)  # each row's real tokens
    expected = float(per_row.mean())  # every sample weighs the same
    got = float(ComponentNorms(ids, mask)(model)[component_names(model).index("L1.MLP")])
    assert got == pytest.approx(expected, rel=1e-6)


def test_hooks_are_removed_even_when_the_forward_fails(model_and_probe):
    model, ids, mask = model_and_probe
    ComponentNorms(ids, mask)(model)
    modules = list(model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
    with pytest.raises(RuntimeError):
        ComponentNorms(ids[:, :5], mask)(model)  # mask/ids shape mismatch -> error inside the forward
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def test_architectures_outside_the_table_are_one_sentence():
    from transformers import GPTJConfig, GPTJForCausalLM

    from codedyn.models.hooks import UnsupportedArchitecture

    with pytest.raises(UnsupportedArchitecture, match=r"Linear is a None model; codedyn hooks.*gpt2, gpt_neox"):
        component_names(torch.nn.Linear(2, 2))
    gptj = GPTJForCausalLM(GPTJConfig(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, rotary_dim=4))
    with pytest.raises(UnsupportedArchitecture, match="is a 'gptj' model"):
        component_names(gptj)
