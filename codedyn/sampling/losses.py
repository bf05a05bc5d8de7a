"""Per-sample losses of code samples: the quantity every posterior readout is built from.

ℓ_i(w) is the mean next-token loss of sample i over its scored tokens (the solution, by default). Samples are
tokenised once, grouped in length buckets and right-padded; pads are masked out and, under causal attention,
invisible to real tokens, so a sample's loss does not depend on its batch (tested).

Every readout stays inside the model's training context (:func:`select_readout`): a long sample is read in one
window that ends at the end of its code, a correct reference and its mutants share the window's first token, and a
mutant whose changed tokens cannot be read that way is left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codedyn.data.tokenize import MaskMode, bucketed_batches, encode_sample, encode_windows
from codedyn.models.token_loss import loss_head, token_losses


def readout_context(context: int | None, cap: int | None, field: str) -> int:
    """The longest readout window: the suite's training ``context``, or ``cap`` (config ``field``) when it is set.

    A cap above the context would read the model where it was never trained, so it is refused; so is a suite that
    does not record its context when no cap is given.
    """
    from codedyn.config import ConfigError

    if context is None:
        if cap is None:
            raise ConfigError(f"this checkpoint suite does not record its training context; set {field} to it")
        return int(cap)
    if cap is not None and cap > context:
        raise ConfigError(f"{field} {cap} exceeds the suite's training context of {context} tokens; lower it "
                          "(or leave it null to read at the full context)")
    return int(context if cap is None else cap)


@dataclass(frozen=True)
class Readout:
    """The samples read out and their windows: ``samples`` (the kept rows, in input order), ``lengths`` [n] (each is
    read as its last ``lengths[i]`` tokens), ``excluded`` (sample ids of mutants left out: their mutation does not
    fit a window of ``context`` tokens shared with their reference)."""

    samples: object  # pandas DataFrame
    lengths: np.ndarray
    excluded: tuple[str, ...]
    context: int

    def record(self) -> dict:
        """What a unit's metadata says about its readout windows."""
        return {"readout_context": self.context, "readout_longest": int(self.lengths.max(initial=0)),
                "readout_excluded": len(self.excluded), "readout_excluded_ids": list(self.excluded)}


def select_readout(tokenizer, samples, context: int) -> Readout:
    """Choose the in-context window of every sample of ``samples`` (columns sample_id, prompt, solution,
    paired_with) and drop the mutants that cannot be read with their reference
    (:func:`codedyn.data.tokenize.window_starts`)."""
    position = {sid: k for k, sid in enumerate(samples["sample_id"])}
    references = [position.get(ref) if isinstance(ref, str) else None for ref in samples["paired_with"]]
    _, windows = encode_windows(tokenizer, samples["prompt"].tolist(), samples["solution"].tolist(), references,
                                context)
    keep = ~windows.excluded
    excluded = tuple(str(sid) for sid in samples["sample_id"].to_numpy()[windows.excluded])
    return Readout(samples[keep].reset_index(drop=True), windows.lengths[keep], excluded, int(context))


@dataclass(frozen=True)
class EvalBatch:
    indices: np.ndarray  # [B] positions of these samples in the evaluation set
    input_ids: object  # torch.LongTensor [B, T]
    attention_mask: object  # torch.LongTensor [B, T]
    loss_mask: object  # torch.BoolTensor [B, T]: True where token t is scored
    scored_rows: object  # torch.LongTensor [S]: batch row of each scored token (row-major order)
    scored_cols: object  # torch.LongTensor [S]: its column in the [B, T-1] token-loss matrix
    scored_slots: object  # torch.LongTensor [S]: its rank among its sample's scored tokens (0, 1, ...)


@dataclass(frozen=True)
class EvalSet:
    """Tokenised, bucketed evaluation samples, ready to be scored at every posterior draw."""

    batches: tuple[EvalBatch, ...]
    n_samples: int
    n_tokens: int  # real (non-pad) tokens
    n_positions: int  # padded positions computed
    max_scored: int  # most scored tokens of one sample: the width of the per-token loss matrix

    @classmethod
    def build(
        cls,
        tokenizer,
        prompts: Sequence[str],
        solutions: Sequence[str],
        mask: MaskMode = "code",
        max_length: int | Sequence[int] | None = None,
        max_tokens: int = 8192,
        device: str = "cpu",
    ) -> EvalSet:
        """``max_length``: one cap for every sample, or each sample's window length (:attr:`Readout.lengths`)."""
        import torch

        caps = [max_length] * len(prompts) if max_length is None or np.ndim(max_length) == 0 else list(max_length)
        encoded = [encode_sample(tokenizer, p, s, mask, None if cap is None else int(cap))
                   for p, s, cap in zip(prompts, solutions, caps, strict=True)]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batches = []
        for indices, arrays in bucketed_batches(encoded, pad_id, max_tokens=max_tokens):
            scored = arrays["loss_mask"][:, 1:]  # entry j of a token-loss row scores token j + 1
            rows, cols = np.nonzero(scored)
            slots = (np.cumsum(scored, axis=1) - 1)[rows, cols]
            batches.append(
                EvalBatch(
                    indices=np.asarray(indices),
                    input_ids=torch.as_tensor(arrays["input_ids"], device=device),
                    attention_mask=torch.as_tensor(arrays["attention_mask"], device=device),
                    loss_mask=torch.as_tensor(arrays["loss_mask"], device=device),
                    scored_rows=torch.as_tensor(rows, device=device),
                    scored_cols=torch.as_tensor(cols, device=device),
                    scored_slots=torch.as_tensor(slots, device=device),
                )
            )
        return cls(
            batches=tuple(batches),
            n_samples=len(encoded),
            n_tokens=sum(len(e) for e in encoded),
            n_positions=sum(int(b.input_ids.numel()) for b in batches),
            max_scored=max(int(e.loss_mask.sum()) for e in encoded),
        )


def readout_evalset(tokenizer, readout: Readout, device: str = "cpu") -> EvalSet:
    """The evaluation set of a :class:`Readout`: each kept sample in its window."""
    return EvalSet.build(tokenizer, readout.samples["prompt"].tolist(), readout.samples["solution"].tolist(),
                         max_length=readout.lengths, device=device)


def masked_mean_losses(token_loss, loss_mask):
    """Mean over each row's scored tokens: [B]."""
    mask = loss_mask[:, 1:].to(token_loss.dtype)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1)


def sample_losses(model, evalset: EvalSet):
    """ℓ_i(w) for every sample of ``evalset``, in its original order: float32 tensor [N] on the model's device."""
    import torch

    out = None
    with torch.no_grad():
        for batch in evalset.batches:
            losses = masked_mean_losses(token_losses(model, batch.input_ids, batch.attention_mask), batch.loss_mask)
            if out is None:
                out = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
            out[torch.as_tensor(batch.indices, device=losses.device)] = losses.float()
    return out


def sample_token_losses(model, evalset: EvalSet, after_batch=None):
    """ℓ_i(w) [N] and the per-token losses behind them [N, max_scored] from one forward pass per batch.

    Row i of the token matrix holds sample i's scored tokens in order (entry t: the t-th code token), NaN after
    its last one; the mean of a row's real entries is ℓ_i up to float32 summation order (tested).
    ``after_batch(batch)``, if given, runs after each batch's forward pass (hooks read what it captured:
    :class:`codedyn.sampling.observables.Recording`).
    """
    import torch

    out = tokens = None
    with torch.no_grad():
        for batch in evalset.batches:
            per_token = token_losses(model, batch.input_ids, batch.attention_mask)
            losses = masked_mean_losses(per_token, batch.loss_mask)
            if out is None:
                out = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
                tokens = torch.full((evalset.n_samples, evalset.max_scored), float("nan"), device=losses.device)
            index = torch.as_tensor(batch.indices, device=losses.device)
            out[index] = losses.float()
            tokens[index[batch.scored_rows], batch.scored_slots] = per_token[batch.scored_rows,
                                                                             batch.scored_cols].float()
            if after_batch is not None:
                after_batch(batch)
    return out, tokens


def with_precision(readout, precision: str | None):
    """``readout`` (model -> losses) evaluated in ``precision`` (``bfloat16``: autocast on the model's device type;
    ``tf32``: TF32 CUDA matmuls, restored afterwards); None returns ``readout`` itself (float32)."""
    if precision is None:
        return readout
    if precision not in ("bfloat16", "tf32"):
        raise ValueError(f"readout precision must be bfloat16, tf32 or None, got {precision!r}")

    def in_precision(model):
        import torch

        if precision == "bfloat16":
            with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16):
                return readout(model)
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            return readout(model)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    return in_precision


def last_positions(attention_mask):
    """[B] index of each right-padded row's last real token (the position that predicts what follows the row)."""
    return attention_mask.sum(dim=1) - 1


def sample_token_verdict_losses(model, evalset: EvalSet, verdicts, wrong, after_batch=None):
    """ℓ_i(w) [N], the per-token losses [N, max_scored] (as :func:`sample_token_losses`), each sample's verdict
    loss [N] and its verdict margin [N], all from one forward pass per batch.

    The verdict loss of sample i is -log p(``verdicts[i]`` | its window), read at the window's last token: for the
    planted task a program ends in the ``#`` that opens its verdict line, so this is the loss of the right verdict
    (`` ok`` for a correct program, `` bug`` for its buggy twin) where the organism's capability is expressed. The
    window already fits the training context, so the position read is one the model was trained at.
    The margin is log p(``verdicts[i]``) - log p(``wrong[i]``) at the same position: the right verdict's log-odds
    against the wrong one, blind to how much probability the two verdicts share.
    ``verdicts``, ``wrong``: [N] token ids (sequences or arrays), in evalset order; ``after_batch`` as in
    :func:`sample_token_losses`.
    """
    import torch

    out = tokens = verdict = margin = None
    with torch.no_grad():
        for batch in evalset.batches:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            size = logits.shape[0]
            per_token = loss_head()(logits, batch.input_ids)
            losses = masked_mean_losses(per_token, batch.loss_mask)
            index = torch.as_tensor(batch.indices, device=losses.device)
            if out is None:
                out = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
                tokens = torch.full((evalset.n_samples, evalset.max_scored), float("nan"), device=losses.device)
                verdict = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
                margin = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
                targets = torch.as_tensor(np.asarray(verdicts), dtype=torch.long, device=losses.device)
                others = torch.as_tensor(np.asarray(wrong), dtype=torch.long, device=losses.device)
            out[index] = losses.float()
            tokens[index[batch.scored_rows], batch.scored_slots] = per_token[batch.scored_rows,
                                                                             batch.scored_cols].float()
            last = logits[torch.arange(size, device=logits.device), last_positions(batch.attention_mask)].float()
            logp = torch.log_softmax(last, dim=-1)
            right = logp.gather(1, targets[index][:, None])[:, 0]
            verdict[index] = -right
            margin[index] = right - logp.gather(1, others[index][:, None])[:, 0]
            if after_batch is not None:
                after_batch(batch)
    return out, tokens, verdict, margin
