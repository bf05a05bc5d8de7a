"""A tiny one-layer GPT-NeoX (Pythia-shaped) model and byte-level tokenizer: what the suite tests write into a fake hub
cache, and what the loss and token-susceptibility tests read out."""

from __future__ import annotations

import torch


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["def f(x):\n    return x + 1\n"] * 10, trainers.BpeTrainer(vocab_size=280))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def tiny_model(seed: int, vocab: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(config)


def tiny_lm(seed: int = 0, vocab: int = 50):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=32)
    return GPTNeoXForCausalLM(config).eval()


def row_losses(probe):
    """Each probe row's mean next-token loss, as a readout (the sampler's own loss formula)."""
    from codedyn.sampling.sgld import lm_token_loss

    return lambda model: lm_token_loss(model, probe).mean(dim=1)
