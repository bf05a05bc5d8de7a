"""What each code token of a sample is: its text, its lexical kind, and whether it lies in the mutated region.

A model token (BPE piece) is classified by Python's own ``tokenize`` of the whole program (prompt + solution, so the
solution's indentation is understood), through character offsets: every character of the program gets the kind of
the Python token covering it (characters no Python token covers are whitespace), and a BPE piece takes the kind of
its first non-whitespace character (``" return"`` is a keyword, ``"):"`` an operator); a piece of whitespace only is
``whitespace`` (spaces, indentation, newlines). Kinds: :data:`TOKEN_KINDS`.

The mutated region of an incorrect sample is where its solution differs from the correct reference it was made
from: the span left between their longest common prefix and suffix (mutants change one site, so this is the edit).
A token is *in the mutation* when its characters overlap that span; a deletion leaves an empty span, and then the
two tokens on either side of the cut are marked.
"""

from __future__ import annotations

import builtins
import io
import keyword
import tokenize
from dataclasses import dataclass

import numpy as np

TOKEN_KINDS: tuple[str, ...] = (
    "keyword", "builtin", "identifier", "operator", "number", "string", "comment", "whitespace", "other",
)
_BUILTINS = frozenset(dir(builtins))


def character_kinds(program: str) -> np.ndarray:
    """The lexical kind of every character of ``program``: an array of indices into :data:`TOKEN_KINDS`.

    Characters not covered by a Python token are whitespace; a program that stops tokenising (it should not: the
    dataset's programs compile) leaves its remaining non-space characters as ``other``.
    """
    whitespace, other = TOKEN_KINDS.index("whitespace"), TOKEN_KINDS.index("other")
    kinds = np.full(len(program), whitespace, dtype=np.int8)
    line_starts = np.concatenate([[0], np.cumsum([len(line) for line in io.StringIO(program).readlines()])])
    reached = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(program).readline):
            kind = _python_kind(tok)
            (r0, c0), (r1, c1) = tok.start, tok.end
            start, end = int(line_starts[r0 - 1]) + c0, int(line_starts[min(r1 - 1, len(line_starts) - 1)]) + c1
            if kind is not None and end > start:
                kinds[start:end] = TOKEN_KINDS.index(kind)
            reached = max(reached, end)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        rest = np.array([not ch.isspace() for ch in program[reached:]], dtype=bool)
        kinds[reached:][rest] = other
    return kinds


def _python_kind(tok: tokenize.TokenInfo) -> str | None:
    if tok.type == tokenize.NAME:
        if keyword.iskeyword(tok.string) or keyword.issoftkeyword(tok.string):
            return "keyword"
        return "builtin" if tok.string in _BUILTINS else "identifier"
    if tok.type == tokenize.OP:
        return "operator"
    if tok.type == tokenize.NUMBER:
        return "number"
    if tok.type == tokenize.STRING or tok.type in _FSTRING_TYPES:
        return "string"
    if tok.type == tokenize.COMMENT:
        return "comment"
    if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
        return None  # whitespace, the default
    return "other"


_FSTRING_TYPES = tuple(getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                       if hasattr(tokenize, name))


def piece_kind(kinds: np.ndarray, text: str, start: int, end: int) -> str:
    """Kind of the piece ``text == program[start:end]``: that of its first non-whitespace character."""
    for offset, ch in enumerate(text):
        if not ch.isspace() and start + offset < end:
            return TOKEN_KINDS[int(kinds[start + offset])]
    inside = TOKEN_KINDS[int(kinds[start])] if end > start else "whitespace"
    return inside if inside in ("string", "comment") else "whitespace"  # spaces inside a docstring are string


def mutation_span(original: str, mutant: str) -> tuple[int, int]:
    """``(start, end)`` in ``mutant`` of the text that differs from ``original`` (empty for a pure deletion)."""
    limit = min(len(original), len(mutant))
    prefix = next((i for i in range(limit) if original[i] != mutant[i]), limit)
    suffix = 0
    while suffix < limit - prefix and original[-1 - suffix] == mutant[-1 - suffix]:
        suffix += 1
    return prefix, len(mutant) - suffix


@dataclass(frozen=True)
class CodeTokens:
    """The scored (code) tokens of one sample, in order; offsets are characters of the solution."""

    token_id: np.ndarray  # [n] int64
    start: np.ndarray  # [n] int64, clipped at 0 for a piece straddling the prompt/solution seam
    end: np.ndarray  # [n] int64
    text: list[str]  # [n] the piece's characters within the solution
    kind: list[str]  # [n] one of TOKEN_KINDS
    in_mutation: np.ndarray  # [n] bool


def code_tokens(
    tokenizer, prompt: str, solution: str, original_solution: str | None = None, max_length: int | None = None
) -> CodeTokens:
    """The code tokens of ``prompt + solution`` exactly as :func:`codedyn.data.tokenize.encode_sample` scores them
    (mask "code", same truncation), with kinds and, when ``original_solution`` (the correct reference) is given,
    the in-mutation flags."""
    from codedyn.data.tokenize import encode_sample

    program = prompt + solution
    encoding = tokenizer(program, return_offsets_mapping=True, add_special_tokens=False)
    ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    if max_length is not None and ids.shape[0] > max_length:
        ids, offsets = ids[-max_length:], offsets[-max_length:]
    scored = encode_sample(tokenizer, prompt, solution, "code", max_length).loss_mask
    ids, offsets = ids[scored], offsets[scored]
    kinds = character_kinds(program)
    seam = len(prompt)
    starts = np.maximum(offsets[:, 0], seam) - seam
    ends = offsets[:, 1] - seam
    texts = [solution[a:b] for a, b in zip(starts, ends, strict=True)]
    kind = [piece_kind(kinds, program[a:b], int(a), int(b))
            for a, b in zip(starts + seam, ends + seam, strict=True)]
    in_mutation = np.zeros(ids.shape[0], dtype=bool)
    if original_solution is not None:
        lo, hi = mutation_span(original_solution, solution)
        if hi == lo:  # deletion: the tokens touching the cut
            lo, hi = lo - 1, lo + 1
        in_mutation = (starts < hi) & (ends > lo)
    return CodeTokens(ids, starts, ends, texts, kind, in_mutation)
