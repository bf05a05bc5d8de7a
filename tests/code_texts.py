"""A prompt, its solution, a long reference and its one-line mutant, and a small tokenizer trained on such code: shared
by the tokenisation and readout tests (the ``tokenizer`` fixture of conftest.py is :func:`code_tokenizer`)."""

from __future__ import annotations

PROMPT = 'def add(a, b):\n    """Return the sum."""\n'
SOLUTION = "    return a + b\n"


def code_tokenizer():
    """A byte-level BPE tokenizer trained on a few lines of code, with a pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [PROMPT + SOLUTION, "def mul(x, y):\n    return x * y\n", "for i in range(10):\n    print(i)\n"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def pair_texts(n_lines: int, mutated_line: int, replacement: str = "*"):
    """A long reference and a mutant that changes one line (``+`` -> ``*``, both in the tokenizer's vocabulary)."""
    lines = [f"    x{k} = a + {k}\n" for k in range(n_lines)]
    mutant = list(lines)
    mutant[mutated_line] = mutant[mutated_line].replace("+", replacement)
    return "".join(lines), "".join(mutant)
