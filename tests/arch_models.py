"""Tiny random causal LMs of every architecture in codedyn's table (GPT-NeoX, GPT-2, Llama with grouped-query
attention, Qwen2, OLMo), and a tiny byte-level tokenizer: shared by the suite, hook and restriction tests."""

from __future__ import annotations

import torch

VOCAB = 300


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "for i in range(10):\n    print(i)\n"] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_model(kind: str, seed: int = 0, layers: int = 2, context: int = 64):
    """A random model of ``kind`` (gpt_neox, gpt2, llama, qwen2, olmo): width 16, 4 heads (Llama/Qwen/OLMo: 2 KV
    heads, grouped-query attention), gated MLPs where the family has them."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "gpt_neox":
        config = tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=32, max_position_embeddings=context, rotary_pct=0.25,
                                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
        return tf.GPTNeoXForCausalLM(config)
    if kind == "gpt2":
        config = tf.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=layers, n_head=4, n_positions=context,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                               eos_token_id=0)
        return tf.GPT2LMHeadModel(config)
    families = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                "olmo": (tf.OlmoConfig, tf.OlmoForCausalLM)}
    config_class, model_class = families[kind]
    config = config_class(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=32, max_position_embeddings=context,
                          tie_word_embeddings=False)
    return model_class(config)


KINDS = ("gpt_neox", "gpt2", "llama", "qwen2", "olmo")


def one_head_norm(model, ids, mask, layer: int, head: int) -> float:
    """Zero every other head's attention output before the output projection; what the projection then adds
    (minus its bias, which belongs to no head) is this head's write into the residual stream. Its norm is averaged
    over each row's real tokens, then over the rows (:class:`codedyn.models.hooks.ComponentNorms`)."""
    from codedyn.models.hooks import _get, architecture, forward_hooks

    arch = architecture(model)
    projection = _get(_get(model, arch.blocks)[layer], arch.attention_out)
    heads = model.config.num_attention_heads
    out = {}

    def keep_one(module, args):
        z = args[0].clone()
        b, t, w = z.shape
        z = z.view(b, t, heads, w // heads)
        z[:, :, [h for h in range(heads) if h != head]] = 0
        return (z.view(b, t, w),)

    def grab(module, args, output):
        out["y"] = output - (module.bias if module.bias is not None else 0)

    with forward_hooks([(projection, keep_one, True), (projection, grab, False)]), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    norms = out["y"].norm(dim=-1)
    return float(((norms * mask).sum(dim=1) / mask.sum(dim=1)).mean())  # each row's token mean, rows alike
