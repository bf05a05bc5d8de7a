"""Architectures by table: per-head and MLP output norms, residual captures and weight restrictions on tiny random
GPT-NeoX, GPT-2, Llama (grouped-query attention), Qwen2 and OLMo models, checked against manual computations, and
loaded both from an HF-cache layout and from a local checkpoint folder."""

import copy

import pytest
import torch

from codedyn.models.hooks import ARCHITECTURES, ComponentNorms, _get, architecture, component_names, forward_hooks
from tests.arch_models import KINDS, VOCAB, one_head_norm, tiny_model, tiny_tokenizer


def probe():
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # a padded row: pads must not count
    return ids, mask


def mlp_norm(model, ids, mask, layer: int) -> float:
    arch = architecture(model)
    mlp = _get(_get(model, arch.blocks)[layer], arch.mlp)
    captured = {}
    with forward_hooks([(mlp, lambda m, a, o: captured.setdefault("o", o), False)]), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    return float(((captured["o"].norm(dim=-1) * mask).sum(dim=1) / mask.sum(dim=1)).mean())


@pytest.mark.parametrize("kind", KINDS)
def test_component_norms_match_manual_computation(kind):
    model = tiny_model(kind).eval()
    ids, mask = probe()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values = ComponentNorms(ids, mask)(model)
    names = component_names(model)
    assert len(values) == len(names) == 2 * (4 + 1)
    for layer in range(2):
        for head in range(4):
            assert float(values[names.index(f"L{layer}.H{head}")]) == pytest.approx(
                one_head_norm(model, ids, mask, layer, head), rel=1e-5)
        assert float(values[names.index(f"L{layer}.MLP")]) == pytest.approx(mlp_norm(model, ids, mask, layer),
                                                                            rel=1e-5)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    for name, value in model.state_dict().items():  # the caller's model is untouched
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_resid_post_is_the_block_output(kind):
    from codedyn.models.activations import resid_post, window_losses

    model = tiny_model(kind, layers=3).eval()
    ids, mask = probe()
    reference = copy.deepcopy(model)  # transformers installs hooks of its own for output_hidden_states
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    captured = resid_post(model, [0, 1], ids, mask)  # stops after block 1
    for layer in (0, 1):  # hidden_states[l + 1] is block l's output (the last one has the final norm applied)
        torch.testing.assert_close(captured[layer], hidden[layer + 1])
    windows = ids.numpy()
    torch.testing.assert_close(torch.as_tensor(window_losses(model, windows, lambda r: r, layer=1)),
                               torch.as_tensor(window_losses(model, windows)))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_weight_restrictions_select_each_heads_share(kind):
    from codedyn.sampling.restricted import WeightRestrictionError, component_masks

    model = tiny_model(kind)
    masks = component_masks(model, "L1.H2")  # checked against the table's per-head share inside
    assert masks and all(".1." in name for name in masks)
    mlp = component_masks(model, "L0.MLP")
    assert mlp and all(".0." in name and "mlp" in name for name in mlp)
    assert component_masks(model, "embed")
    if kind == "gpt2":  # GPT-2 ties its unembedding to the embedding
        with pytest.raises(WeightRestrictionError, match="tied to the embedding"):
            component_masks(model, "unembed")
    else:
        assert list(component_masks(model, "unembed")) in (["lm_head.weight"], ["embed_out.weight"])


def test_grouped_query_heads_share_their_groups_key_and_value_rows():
    from codedyn.sampling.restricted import component_masks

    model = tiny_model("llama")  # 4 query heads, 2 KV heads, d_head 4
    for head, group in ((0, 0), (1, 0), (2, 1), (3, 1)):
        masks = component_masks(model, f"L0.H{head}")
        q = masks["model.layers.0.self_attn.q_proj.weight"][:, 0]
        k = masks["model.layers.0.self_attn.k_proj.weight"][:, 0]
        o = masks["model.layers.0.self_attn.o_proj.weight"][0]
        assert q.nonzero().flatten().tolist() == list(range(4 * head, 4 * head + 4))
        assert k.nonzero().flatten().tolist() == list(range(4 * group, 4 * group + 4))
        assert o.nonzero().flatten().tolist() == list(range(4 * head, 4 * head + 4))


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_from_hf_cache_and_folder_give_the_same_observables(kind, tmp_path, monkeypatch):
    from codedyn.models.suite import folder_suite, hf_suite, write_revision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = tiny_model(kind, seed=3).eval(), tiny_tokenizer()
    write_revision(tmp_path / "hf", f"acme/{kind}-tiny", 100, model, tokenizer)
    model.save_pretrained(tmp_path / "run" / "checkpoint-100")
    tokenizer.save_pretrained(tmp_path / "run")
    ids, mask = probe()
    expected = ComponentNorms(ids, mask)(model)
    for suite in (hf_suite(f"acme/{kind}-tiny", hub_cache=tmp_path / "hf"), folder_suite(tmp_path / "run")):
        suite.check_available([100])
        loaded = suite.load(100).model
        assert loaded.config.model_type == kind
        torch.testing.assert_close(ComponentNorms(ids, mask)(loaded), expected)


def test_a_series_of_an_unknown_architecture_stops_before_any_work(tmp_path, monkeypatch):
    from transformers import GPTJConfig, GPTJForCausalLM

    from codedyn.models.suite import SuiteError, folder_suite, hf_suite, write_revision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gptj = GPTJForCausalLM(GPTJConfig(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16,
                                      rotary_dim=4))
    write_revision(tmp_path / "hf", "acme/gptj-tiny", 5, gptj, tiny_tokenizer())
    with pytest.raises(SuiteError, match=r"step5 of acme/gptj-tiny is a 'gptj' model; codedyn hooks"):
        hf_suite("acme/gptj-tiny", hub_cache=tmp_path / "hf").check_available([5])
    gptj.save_pretrained(tmp_path / "run" / "step5")
    tiny_tokenizer().save_pretrained(tmp_path / "run")
    with pytest.raises(SuiteError, match="is a 'gptj' model"):
        folder_suite(tmp_path / "run").check_available([5])


def test_table_covers_the_families_codedyn_documents():
    assert {"gpt_neox", "gpt2", "llama", "qwen2", "olmo", "mistral"} <= set(ARCHITECTURES)
