"""TopK SAE: its invariants, its metrics against an independent computation, storage, and the SAE-latent observable."""

import numpy as np
import pytest
import torch

from codedyn.models.activations import ce_loss_recovered, final_token_residuals, resid_post, resolve_layers
from codedyn.models.sae import (
    SaeLatentMeans,
    TopKSAE,
    decoder_cosines,
    init_sae,
    sae_latent_names,
    sae_metrics,
    train_sae,
)


def _sparse_data(n: int, d: int, features: int, p: float, seed: int):
    """x = sum of active dictionary directions (amplitudes U(1, 2)) + small noise; returns (x, dictionary)."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(features, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    active = rng.random((n, features)) < p
    x = (active * rng.uniform(1, 2, (n, features))) @ dictionary + 0.02 * rng.normal(size=(n, d))
    return torch.as_tensor(x, dtype=torch.float32), dictionary


def _fixed_sae(d: int, width: int, k: int, seed: int, b_enc: float = 0.0, scale: float = 1.3) -> TopKSAE:
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(width, d, generator=g)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    w_enc = torch.randn(d, width, generator=g) * 0.5
    return TopKSAE(w_enc, torch.full((width,), b_enc), w_dec, 0.1 * torch.randn(d, generator=g), k=k, scale=scale)


def _numpy_topk(sae: TopKSAE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference encode / decode written directly from the definitions, in float64 numpy."""
    w_enc, b_enc = sae.W_enc.double().numpy(), sae.b_enc.double().numpy()
    w_dec, b_dec = sae.W_dec.double().numpy(), sae.b_dec.double().numpy()
    pre = np.maximum((x / sae.scale - b_dec) @ w_enc + b_enc, 0)
    z = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1, kind="stable")[:, : sae.k]
    np.put_along_axis(z, top, np.take_along_axis(pre, top, axis=1), axis=1)
    return z, (z @ w_dec + b_dec) * sae.scale


def test_exactly_k_latents_fire_and_they_are_the_largest():
    sae = _fixed_sae(d=8, width=32, k=5, seed=0, b_enc=10.0)  # every pre-activation positive
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    z = sae.encode(x)
    assert ((z > 0).sum(dim=-1) == 5).all()
    pre = sae.pre_activations(x)
    assert torch.equal(z.topk(5, dim=-1).indices.sort().values, pre.topk(5, dim=-1).indices.sort().values)
    # With negative pre-activations the ReLU keeps a latent from firing: never more than k.
    assert ((_fixed_sae(8, 32, 5, 0, b_enc=-3.0).encode(x) > 0).sum(dim=-1) <= 5).all()


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_decoder_rows_stay_unit_norm_after_every_step(steps):
    x, _ = _sparse_data(700, 12, 20, 0.1, seed=0)
    sae, log = train_sae(x, 48, 4, epochs=1, batch_size=-(-700 // steps), lr=1e-2, aux_k=8, aux_coef=1 / 32,
                         dead_tokens=50, seed=0)
    assert log.steps == steps
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(48), atol=1e-5)


def test_decoder_gradient_projection_removes_the_radial_part():
    from codedyn.models.sae import project_decoder_grad

    sae = _fixed_sae(6, 10, 2, 0)
    sae.W_dec.grad = torch.randn(10, 6)
    project_decoder_grad(sae)
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(dim=-1), torch.zeros(10), atol=1e-6)


def test_training_recovers_a_sparse_dictionary():
    x, dictionary = _sparse_data(4000, 32, 24, 0.06, seed=2)
    sae, log = train_sae(x, 64, 4, epochs=6, batch_size=128, lr=4e-3, aux_k=16, aux_coef=1 / 32,
                         dead_tokens=2000, seed=0)
    cos = np.abs(dictionary @ sae.W_dec.numpy().T).max(axis=1)  # best latent per true feature
    assert np.median(cos) > 0.95 and cos.min() > 0.8
    assert sae_metrics(sae, x)["explained_variance"] > 0.9
    assert log.tokens == 6 * 4000 and log.tokens_per_second > 0


def test_aux_loss_revives_dead_latents():
    """Latents whose encoder is too weak to ever win a top-k slot stay dead without the auxiliary loss; with it,
    their (positive) pre-activations reconstruct the residual error, get a gradient and come back."""
    x, _ = _sparse_data(2000, 16, 24, 0.06, seed=3)

    def dead_after(aux_coef: float) -> float:
        init = init_sae(x, 64, 4, seed=0)
        init.W_enc[:, 32:] *= 0.02  # half the latents lose every top-k contest
        sae, _ = train_sae(x, 64, 4, epochs=4, batch_size=128, lr=4e-3, aux_k=32, aux_coef=aux_coef,
                           dead_tokens=256, seed=0, init=init)
        return sae_metrics(sae, x)["dead_fraction"]

    without = dead_after(0.0)
    assert without >= 0.3
    assert dead_after(1.0) < without - 0.2


def test_init_from_previous_keeps_latent_identity():
    x, _ = _sparse_data(3000, 16, 24, 0.06, seed=4)
    first, _ = train_sae(x, 64, 4, epochs=4, batch_size=256, lr=4e-3, aux_k=16, aux_coef=1 / 32,
                         dead_tokens=1000, seed=0)
    again, _ = train_sae(x, 64, 4, epochs=1, batch_size=256, lr=1e-3, aux_k=16, aux_coef=1 / 32,
                         dead_tokens=1000, seed=1, init=first)
    fresh, _ = train_sae(x, 64, 4, epochs=1, batch_size=256, lr=1e-3, aux_k=16, aux_coef=1 / 32,
                         dead_tokens=1000, seed=1)
    assert np.median(decoder_cosines(again, first)) > 0.95
    assert np.median(decoder_cosines(fresh, first)) < 0.5  # a fresh SAE's latent j is another feature
    assert first.W_dec.requires_grad is False  # the previous SAE is never modified


def test_save_and_load_round_trip(tmp_path):
    sae = _fixed_sae(8, 16, 3, 0)
    sae.meta["step"] = 12
    sae.save(tmp_path, layer=1)
    back = TopKSAE.load(tmp_path, 1)
    for a, b in zip(sae.parameters(), back.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (back.k, back.scale, back.meta["step"]) == (3, sae.scale, 12)
    with pytest.raises(FileNotFoundError, match="layer 0"):
        TopKSAE.load(tmp_path, 0)


# ------------------------------------------------------------------------------------ metrics vs a reference


@pytest.fixture(scope="module")
def one_layer_model():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, rotary_pct=0.5)
    return GPTNeoXForCausalLM(config).eval()


def _reference_resid(model, ids) -> np.ndarray:
    """resid_post of the only layer = the input of the final layer norm (read without our capture code)."""
    grabbed = {}
    handle = model.gpt_neox.final_layer_norm.register_forward_pre_hook(lambda m, a: grabbed.setdefault("x", a[0]))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return grabbed["x"].double().numpy()


def _reference_ce(model, resid: np.ndarray, ids) -> float:
    """Mean next-token CE with logits computed by hand from a given resid_post (the unembedding of the model)."""
    with torch.no_grad():
        x = torch.as_tensor(resid, dtype=torch.float32)
        logits = model.get_output_embeddings()(model.gpt_neox.final_layer_norm(x)).double()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        return float(-logp.gather(-1, ids[:, 1:, None]).mean())


def test_sae_metrics_match_an_independent_computation(one_layer_model):
    model = one_layer_model
    ids = torch.randint(0, 50, (6, 12), generator=torch.Generator().manual_seed(3))
    sae = _fixed_sae(16, 40, 3, seed=5, b_enc=0.05, scale=0.8)
    resid = resid_post(model, [0], ids)[0]
    reference = _reference_resid(model, ids)
    np.testing.assert_allclose(resid.double().numpy(), reference, atol=1e-5)

    flat = reference.reshape(-1, 16)
    z, x_hat = _numpy_topk(sae, flat)
    expected_ev = 1 - ((flat - x_hat) ** 2).sum() / ((flat - flat.mean(axis=0)) ** 2).sum()
    fired = z > 0
    got = sae_metrics(sae, resid, n_boot=200, seed=0)
    assert got["explained_variance"] == pytest.approx(expected_ev, abs=1e-5)
    assert got["l0"] == pytest.approx(fired.sum(axis=1).mean())
    assert got["dead_fraction"] == pytest.approx(1 - fired.any(axis=0).mean())
    for name in ("explained_variance", "l0", "dead_fraction"):
        assert got[f"{name}_low"] <= got[name] + 1e-12 <= got[f"{name}_high"] + 2e-12

    ce = ce_loss_recovered(model, ids, 0, sae, n_boot=200, seed=0)
    clean = _reference_ce(model, reference, ids)
    spliced = _reference_ce(model, x_hat.reshape(reference.shape), ids)
    zero = _reference_ce(model, np.zeros_like(reference), ids)
    assert ce["ce_clean"] == pytest.approx(clean, abs=1e-5)
    assert ce["ce_spliced"] == pytest.approx(spliced, abs=1e-4)
    assert ce["ce_zero_ablation"] == pytest.approx(zero, abs=1e-5)
    assert ce["ce_loss_recovered"] == pytest.approx((zero - spliced) / (zero - clean), abs=1e-3)
    assert ce["ce_loss_recovered_low"] <= ce["ce_loss_recovered"] <= ce["ce_loss_recovered_high"]
    assert not model.gpt_neox.layers[0]._forward_hooks  # the splice hook is gone


# --------------------------------------------------------------------------------------------- observables


@pytest.fixture(scope="module")
def two_layer_model():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(1)
    config = GPTNeoXConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, rotary_pct=0.5)
    return GPTNeoXForCausalLM(config).eval()


def test_sae_latent_means_against_direct_computation(two_layer_model):
    model = two_layer_model
    ids = torch.randint(0, 60, (3, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding does not count
    sae = _fixed_sae(16, 24, 4, seed=6)
    observable = SaeLatentMeans(sae, 0, ids, mask)
    before = [(dict(b._forward_hooks), dict(b._forward_pre_hooks)) for b in model.gpt_neox.layers]
    values = observable(model)
    assert [(dict(b._forward_hooks), dict(b._forward_pre_hooks)) for b in model.gpt_neox.layers] == before
    assert values.shape == (24,) and not values.requires_grad
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]  # layer 0
    z, _ = _numpy_topk(sae, hidden.double().numpy().reshape(-1, 16))
    weights = mask.numpy().reshape(-1, 1)
    np.testing.assert_allclose(values.numpy(), (z * weights).sum(axis=0) / weights.sum(), rtol=1e-4, atol=1e-6)
    assert observable.names() == sae_latent_names(0, 24) and observable.names()[17] == "L0.SAE17"


def test_capture_stops_early_and_reads_the_final_token(two_layer_model):
    from transformers import PreTrainedTokenizerFast

    model = two_layer_model
    ids = torch.randint(0, 60, (2, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    calls = []
    handle = model.gpt_neox.layers[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        np.testing.assert_allclose(resid_post(model, [0], ids)[0].numpy(), hidden[1].numpy(), atol=1e-6)
        assert not calls  # layer 1 never ran: the capture stopped after layer 0
        resid_post(model, [1], ids)
        assert len(calls) == 1
    finally:
        handle.remove()
    assert resolve_layers(2, None) == (0, 1) and resolve_layers(12, None) == (5, 11)
    assert resolve_layers(6, [-1, 2]) == (2, 5)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_layers(2, [2])

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {chr(97 + i): i for i in range(26)} | {" ": 26, "\n": 27, "<pad>": 28}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<pad>")
    prompts, solutions = ["ab c\n", "abcdefgh\n", "x"], [" d\n", " q r s\n", "yz"]
    got = final_token_residuals(model, tokenizer, prompts, solutions, [0, 1], max_tokens=6)
    for row, (p, s) in enumerate(zip(prompts, solutions, strict=True)):
        one = torch.as_tensor([tokenizer(p + s, add_special_tokens=False)["input_ids"][-6:]])
        alone = resid_post(model, [0, 1], one)
        for layer in (0, 1):
            np.testing.assert_allclose(got[layer][row], alone[layer][0, -1].numpy(), atol=1e-5)
