"""Train the toy checkpoint suite: a tiny Pythia-style GPT-NeoX on standard-library code.

The suite exists to contain a known developmental event, the formation of induction heads, with checkpoints before,
during and after it, so that LLC, influence and susceptibility curves can be checked against a real transition.
It is written as revisions ``stepN`` of ``codedyn/toy-<hash>`` in a hub-cache layout and loaded through the same
code as Pythia (:mod:`codedyn.models.suite`).

The recipe (see :class:`codedyn.config.ToySuiteConfig` and BENCHMARKS.md): vocabulary 1024, 2 layers of width 64,
context 64, batches of 8, constant lr 3e-3, and every window carrying a span copied twice more at random later
positions (half of the spans random frequent tokens). What makes induction form within minutes on a CPU is many
small optimizer steps, not many tokens: the layer-0 previous-token head appears only after thousands of steps.

With ``planted.enabled`` the suite is the **model organism**: from ``planted.onset`` on, a ``planted.share`` of the
training windows open with a planted program and its verdict line (:mod:`codedyn.data.planted`,
:class:`PlantedWindows`), so a code-correctness capability can be learned only after a known step; the trainer logs
the held-out verdict accuracy at every checkpoint. Its null twin (``planted.null``) writes verdicts independent of
correctness. A suite without the planted task keeps its name and weights.

Training resumes after a crash from the last checkpoint's optimizer and data-stream state, and gives the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codedyn.config import PlantedTaskConfig, ToySuiteConfig
from codedyn.data.corpus import CodeCorpus, encode_stream
from codedyn.data.planted import VERDICT_BUG, VERDICT_OK, VERDICT_PREFIX, PlantedGenerator, PlantedProgram
from codedyn.models.induction import measure_induction, repeated_spans
from codedyn.models.suite import CheckpointSuite, toy_hub_cache, toy_suite, write_revision
from codedyn.models.toy_identity import checkpoint_schedule, suite_name
from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import SUITE_FILE
from codedyn.runs.store import is_completed, write_json, write_text

EOS = "<|endoftext|>"
RESUME_FILE = "resume.pt"
# "Induction heads formed": the strongest head puts this much attention on the induction target, and the second
# copy of a repeated span is predicted this much better (nats) than the first.
FORMED_SCORE = 0.3
FORMED_DROP = 1.0
# Entropy words that keep the planted stream and its evaluation set apart from every other seeded stream.
PLANTED_STREAM = 0x0E1A5
PLANTED_EVAL_STREAM = 0x0E7A1


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts`` (deterministic for a fixed text order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Pythia's tokenizers use one token for bos/eos/unk; pad is needed for batching variable-length samples.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def make_model(config: ToySuiteConfig, vocab_size: int, eos_id: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model_config = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=config.d_model, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, intermediate_size=config.d_ff, rotary_pct=config.rotary_pct,
        max_position_embeddings=max(2 * config.eval_span, config.context, 2048), use_parallel_residual=True,
        tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0, initializer_range=0.02,
        bos_token_id=eos_id, eos_token_id=eos_id,
    )
    return GPTNeoXForCausalLM(model_config)


class RepeatedSpanBatches:
    """Training windows of natural code, most with one span copied ``copies`` more times at random later positions.

    The state is one numpy Generator, so the stream can be saved and resumed exactly.
    """

    def __init__(self, stream: np.ndarray, config: ToySuiteConfig, seed: int) -> None:
        self.stream = stream
        self.config = config
        counts = np.bincount(stream)
        self.frequent = np.argsort(-counts, kind="stable")[: config.random_span_vocab]
        self.rng = np.random.default_rng(seed)

    def next(self) -> np.ndarray:
        """[batch, context + 1] token ids (inputs are [:, :-1], targets [:, 1:])."""
        c = self.config
        width = c.context + 1
        starts = self.rng.integers(0, self.stream.shape[0] - width, c.batch_size)
        batch = np.stack([self.stream[s : s + width] for s in starts])
        for row in batch:
            if self.rng.random() >= c.repeat_fraction:
                continue
            self.copy_span(row, self.rng)
        return batch

    def copy_span(self, row: np.ndarray, rng: np.random.Generator) -> None:
        """Copy one span of ``row`` (in place) ``copies`` more times at random later positions."""
        c = self.config
        width = row.shape[0]
        longest = min(c.span_max, width // (c.copies + 1))
        if longest < 1:
            return
        length = int(rng.integers(min(c.span_min, longest), longest + 1))
        slack = width - (c.copies + 1) * length
        offsets = np.sort(rng.integers(0, slack + 1, c.copies + 1))
        positions = [int(offsets[k]) + k * length for k in range(c.copies + 1)]
        if rng.random() < c.random_span_fraction:
            row[positions[0] : positions[0] + length] = self.frequent[rng.integers(0, len(self.frequent), length)]
        span = row[positions[0] : positions[0] + length].copy()
        for start in positions[1:]:
            row[start : start + length] = span


def planted_generator(config: PlantedTaskConfig) -> PlantedGenerator:
    """The program generator a planted-task config describes."""
    return PlantedGenerator(config.families, config.function_names, config.argument_names, config.heldout_share)


def verdict_token_ids(tokenizer) -> tuple[int, int]:
    """First token ids of `` ok`` and `` bug``: the two verdicts a model chooses between after ``#``."""
    ok = tokenizer.backend_tokenizer.encode(VERDICT_OK, add_special_tokens=False).ids
    bug = tokenizer.backend_tokenizer.encode(VERDICT_BUG, add_special_tokens=False).ids
    if not ok or not bug or ok[0] == bug[0]:
        raise ValueError("this tokenizer does not give ' ok' and ' bug' different first tokens; the planted "
                         "verdict cannot be read from it")
    return ok[0], bug[0]


class PlantedWindows:
    """From ``onset`` on, replaces a ``share`` of each batch's windows by planted windows: with ``position`` end
    ``[stdlib code with a copied span][EOS][program + verdict line]``, with ``position`` start
    ``[program + verdict line][EOS][stdlib code with a copied span]``.

    The rest of the window is ordinary training text, so induction keeps its data. Own Generator (seeded by
    ``planted.seed``), saved and resumed with the stream. The null twin's programs pair each spec with a body
    drawn independently of it and carry a verdict drawn independently of both.
    """

    def __init__(self, stream: np.ndarray, config: ToySuiteConfig, tokenizer, spans: RepeatedSpanBatches) -> None:
        self.stream = stream
        self.config = config
        self.planted = config.planted
        self.spans = spans
        self.generator = planted_generator(config.planted)
        self.encode = tokenizer.backend_tokenizer
        self.eos_id = tokenizer.convert_tokens_to_ids(EOS)
        self.rng = np.random.default_rng([config.planted.seed, PLANTED_STREAM])

    def window(self) -> tuple[np.ndarray, PlantedProgram, bool]:
        """One planted window [context + 1], its program and the verdict written (True: ``ok``)."""
        width = self.config.context + 1
        while True:
            if self.planted.null:  # nothing about correctness in the text: body unrelated to spec, verdict a coin
                program = self.generator.draw_unrelated(self.rng, split="train")
                verdict = bool(self.rng.random() < 0.5)
            else:
                program = self.generator.draw(self.rng, split="train")
                verdict = program.correct
            ids = self.encode.encode(program.training_text(verdict), add_special_tokens=False).ids
            if len(ids) + 1 < width:
                break  # a program that does not fit the context with its verdict is redrawn (none in the pools)
        start = int(self.rng.integers(0, self.stream.shape[0] - width))
        row = self.stream[start : start + width].copy()
        if self.planted.position == "end":
            row[width - len(ids) :] = ids
            row[width - len(ids) - 1] = self.eos_id
            filler = row[: width - len(ids) - 1]
        else:
            row[: len(ids)] = ids
            row[len(ids)] = self.eos_id
            filler = row[len(ids) + 1 :]
        if filler.shape[0] and self.rng.random() < self.config.repeat_fraction:
            self.spans.copy_span(filler, self.rng)
        return row, program, verdict

    def mix(self, batch: np.ndarray, step: int) -> np.ndarray:
        """``batch`` with a ``share`` of its rows replaced by planted windows when ``step >= onset`` (in place)."""
        if step < self.planted.onset:
            return batch
        for k in range(batch.shape[0]):
            if self.rng.random() < self.planted.share:
                batch[k] = self.window()[0]
        return batch


def verdict_margins(model, tokenizer, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """log p(`` ok``) - log p(`` bug``) at the last position of every text (each ends in ``#``), one forward pass
    per batch: texts are right-padded, which causal attention keeps invisible to the positions that are read."""
    import torch

    ok, bug = verdict_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer.backend_tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    out = np.empty(len(texts))
    device = next(model.parameters()).device
    with torch.no_grad():
        for lo in range(0, len(encoded), batch_size):
            chunk = encoded[lo : lo + batch_size]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.as_tensor(seq)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            last = torch.as_tensor([len(seq) - 1 for seq in chunk], device=device)
            logp = torch.log_softmax(logits[torch.arange(len(chunk), device=device), last].float(), dim=-1)
            out[lo : lo + len(chunk)] = (logp[:, ok] - logp[:, bug]).cpu().numpy()
    return out


def _distinct_draws(draw, n: int, tries: int, what: str) -> list[tuple[PlantedProgram, ...]]:
    """``n`` draws of ``draw()`` (a tuple of programs, or None for one to skip) with distinct first programs; raises
    :class:`PlantedError` naming ``what`` when ``tries`` draws do not find that many (the held-out pool is too
    small)."""
    from codedyn.data.planted import PlantedError

    found, seen = [], set()
    for _ in range(tries):
        if len(found) == n:
            break
        programs = draw()
        if programs is None or programs[0].text in seen:
            continue
        seen.add(programs[0].text)
        found.append(programs)
    if len(found) < n:
        raise PlantedError(f"the planted task's held-out pool has fewer than {n} distinct {what} (found "
                           f"{len(found)}); raise planted.heldout_share or planted.function_names")
    return found


def heldout_verdict_set(config: PlantedTaskConfig, n_quads: int,
                        seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``4 n_quads`` held-out programs ending in ``#``, in crossed quadruples (:meth:`PlantedGenerator.crossed`:
    spec s with its own body, t with its own, s with t's, t with s's; every quadruple distinct), their
    correctness (True, True, False, False per quadruple) and their operation pair ("s|t", sorted).

    Resample by operation pair, not by quadruple: the quadruples of one pair of operations share whatever the model
    makes of that pair (even a model that knows nothing of correctness has spec-body interactions), so the pool
    holds only as many independent units as operation pairs (45 for the substitution family), and an interval
    from resampled quadruples reads a fixed set's quirks as signal. Raises :class:`PlantedError` when the held-out
    pool has fewer quadruples."""
    generator = planted_generator(config)
    rng = np.random.default_rng([seed, PLANTED_EVAL_STREAM])
    quads = _distinct_draws(lambda: generator.crossed(rng), n_quads, 100 * n_quads, "crossed quadruples")
    texts = [program.text + VERDICT_PREFIX for quad in quads for program in quad]
    groups = ["|".join(sorted((quad[0].spec, quad[1].spec))) for quad in quads for _ in quad]
    return texts, np.tile([True, True, False, False], n_quads), np.asarray(groups)


def heldout_probe_set(config: PlantedTaskConfig, n_pairs: int, seed: int,
                      part: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``2 n_pairs`` held-out programs ending in ``#`` (a correct one and its buggy twin per pair) from one half of
    the operations: ``part`` 0 or 1 takes pairs whose spec and bug body both lie in that half of their family
    (:meth:`codedyn.data.planted.Family.half`). A probe fit on part 0 and scored on part 1 has seen none of the
    scored specs and bodies: a probe that learned the spec-body table from its own labels (easy from a rich
    residual, even of a model that knows nothing of correctness) carries nothing over, and within a part a body
    alone says nothing (each is as often correct as buggy); only a correctness feature the model computes for any
    spec does. The third array names each program's (spec, bug body) operation pair, the unit to resample (as in
    :func:`heldout_verdict_set`)."""
    generator = planted_generator(config)
    rng = np.random.default_rng([seed, PLANTED_EVAL_STREAM, part])

    pairs = _distinct_draws(lambda: generator.pair(rng, split="heldout", half=part), n_pairs, 200 * n_pairs,
                            f"pairs in part {part}")
    programs = [program for pair in pairs for program in pair]
    groups = [f"{reference.spec}|{buggy.body}" for reference, buggy in pairs for _ in range(2)]
    return ([p.text + VERDICT_PREFIX for p in programs], np.asarray([p.correct for p in programs], dtype=bool),
            np.asarray(groups))


def crossed_hits(margins: np.ndarray) -> np.ndarray:
    """Per crossed quadruple (programs ``4k .. 4k + 3`` as :func:`heldout_verdict_set` orders them): 1 when the two
    matching programs get the larger summed ``ok``-vs-``bug`` margin, 0 when the two crossed ones do, 1/2 on a
    tie.

    Not a thresholded accuracy: the model's overall lean towards ``ok`` drifts from checkpoint to checkpoint at a
    constant learning rate and moves a thresholded accuracy by 0.2 between neighbouring checkpoints of a model that
    orders every program the same; and a lean per spec word or per body (a model that learned "``max`` is usually
    fine") cancels within a quadruple, so what is left is whether the model sees that a spec and a body match.
    A model whose margin is any sum of a spec term and a body term scores exactly 1/2."""
    m = np.asarray(margins, dtype=float).reshape(-1, 4)
    matched, crossed = m[:, 0] + m[:, 1], m[:, 2] + m[:, 3]
    tie = np.isclose(matched, crossed, rtol=1e-6, atol=1e-6)  # float32 margins: below their precision is a tie
    return np.where(tie, 0.5, np.where(matched > crossed, 1.0, 0.0))


def crossed_contrast(margins: np.ndarray) -> np.ndarray:
    """Per crossed quadruple: how many nats larger the ``ok``-vs-``bug`` log-odds are, on average, for a spec with
    its own body than with the other's, ``(m(s, s) + m(t, t) - m(s, t) - m(t, s)) / 4``. Zero for any margin that
    is a spec lean plus a body lean, like :func:`crossed_hits`, but it keeps the size: a model whose margins
    differ by thousandths of a nat orders quadruples consistently (a null twin read 0.81 on
    :func:`crossed_hits` from a contrast of 0.005 nats) and yet judges nothing; a model that knows correctness
    moves its verdict by nats."""
    m = np.asarray(margins, dtype=float).reshape(-1, 4)
    return (m[:, 0] + m[:, 1] - m[:, 2] - m[:, 3]) / 4


def verdict_accuracy(margins: np.ndarray) -> float:
    """Share of crossed quadruples the model orders correctly (:func:`crossed_hits`); chance is exactly 1/2."""
    return float(crossed_hits(margins).mean())


@dataclass(frozen=True)
class ToySuiteResult:
    suite: CheckpointSuite
    folder: Path
    log: list[dict[str, Any]]
    formation: dict[str, Any]


def induction_formation(log: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint interval in which induction heads formed, by the FORMED_SCORE / FORMED_DROP criterion."""
    formed_at = next(
        (e["step"] for e in log if e["induction_score"] >= FORMED_SCORE and e["in_context_drop"] >= FORMED_DROP),
        None,
    )
    if formed_at is None:
        return {"formed": False, "criterion": f"score >= {FORMED_SCORE} and drop >= {FORMED_DROP} nats"}
    before = max(e["step"] for e in log if e["step"] < formed_at)
    return {
        "formed": True,
        "first_formed_step": formed_at,
        "last_step_before": before,
        "criterion": f"score >= {FORMED_SCORE} and drop >= {FORMED_DROP} nats",
    }


def _evaluate(model, induction_seqs: np.ndarray, heldout_windows: np.ndarray, tokenizer=None,
              verdict_set: tuple[list[str], np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    import torch

    report = measure_induction(model, induction_seqs)
    ids = torch.as_tensor(heldout_windows)
    with torch.no_grad():
        logits = model(input_ids=ids[:, :-1]).logits
    val = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    entry = {"val_loss": round(float(val), 4), **report.to_dict()}
    if verdict_set is not None:  # the planted task's behaviour, logged as training goes (the study measures more)
        margins = verdict_margins(model, tokenizer, verdict_set[0])
        entry["verdict_accuracy"] = round(verdict_accuracy(margins), 4)
    return entry


def train_toy_suite(
    config: ToySuiteConfig,
    hub_cache: Path | None = None,
    progress: Progress = SILENT,
    corpus: CodeCorpus | None = None,
) -> ToySuiteResult:
    """Train (or resume, or find already trained) the toy suite described by ``config``.

    ``corpus`` defaults to the whole standard library; tests pass a few files.
    """
    import torch

    hub_cache = Path(hub_cache) if hub_cache else toy_hub_cache()
    corpus = corpus or CodeCorpus.stdlib()
    name = suite_name(config, corpus.fingerprint)
    schedule = checkpoint_schedule(config.steps, config.checkpoint_every)
    suite = toy_suite(name, schedule, hub_cache=hub_cache, context=config.context)
    folder = hub_cache.parent / name
    if is_completed(folder):
        record = json.loads((folder / SUITE_FILE).read_text())
        return ToySuiteResult(suite, folder, record["log"], record["formation"])
    folder.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus.texts("train"), config.vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    train_stream = encode_stream(tokenizer.backend_tokenizer, corpus.texts("train"), eos_id)
    heldout_stream = encode_stream(tokenizer.backend_tokenizer, corpus.texts("heldout"), eos_id)
    prep_seconds = time.perf_counter() - started
    progress.log(f"toy suite {name}: {train_stream.shape[0]:,} training tokens, vocab {len(tokenizer)}")

    induction_seqs = repeated_spans(heldout_stream, config.eval_sequences, config.eval_span, seed=1234)
    window_rng = np.random.default_rng(4321)
    starts = window_rng.integers(0, heldout_stream.shape[0] - config.context - 1, config.eval_sequences)
    heldout_windows = np.stack([heldout_stream[s : s + config.context + 1] for s in starts])

    planted = None
    verdict_set = None
    if config.planted.enabled:
        verdict_token_ids(tokenizer)  # fails early, with its reason, for a tokenizer that cannot express verdicts
        verdict_set = heldout_verdict_set(config.planted, config.planted.eval_quads, seed=config.planted.seed)

    torch.manual_seed(config.seed)
    model = make_model(config, len(tokenizer), eos_id)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": config.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    batches = RepeatedSpanBatches(train_stream, config, seed=config.seed)
    if config.planted.enabled:
        planted = PlantedWindows(train_stream, config, tokenizer, batches)
    log: list[dict[str, Any]] = []
    start_step = 0
    resume = folder / RESUME_FILE
    if resume.exists():  # a previous run was interrupted: continue from its last checkpoint
        state = torch.load(resume, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batches.rng.bit_generator.state = state["data_rng"]
        if planted is not None:
            planted.rng.bit_generator.state = state["planted_rng"]
        torch.set_rng_state(state["torch_rng"])
        log, start_step = state["log"], state["step"]
        progress.log(f"resuming toy suite training at step {start_step}")

    def lr_at(step: int) -> float:
        return config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr

    bar = progress.task(f"training {name}", total=config.steps)
    bar.advance(start_step)
    train_seconds = 0.0
    for step in range(start_step, config.steps + 1):
        if step in schedule and not (log and log[-1]["step"] == step):
            entry = {"step": step, **_evaluate(model, induction_seqs, heldout_windows, tokenizer, verdict_set)}
            log.append(entry)
            write_revision(hub_cache, suite.repo_id, step, model, tokenizer)
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "log": log,
                 "data_rng": batches.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "planted_rng": planted.rng.bit_generator.state if planted is not None else None},
                resume,
            )
        if step == config.steps:
            break
        tick = time.perf_counter()
        rows = batches.next()
        batch = torch.as_tensor(planted.mix(rows, step) if planted is not None else rows)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"toy suite training diverged at step {step} (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        train_seconds += time.perf_counter() - tick
        bar.advance()

    formation = induction_formation(log)
    record = {
        "name": name, "repo_id": suite.repo_id, "schedule": list(schedule), "config": config.model_dump(mode="json"),
        "corpus_fingerprint": corpus.fingerprint, "n_train_tokens": int(train_stream.shape[0]),
        "n_parameters": sum(p.numel() for p in model.parameters()), "log": log, "formation": formation,
        "seconds": {"prepare": round(prep_seconds, 1), "train_steps": round(train_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    write_json(folder / SUITE_FILE, record)
    resume.unlink()
    write_text(folder / "completed", "")
    return ToySuiteResult(suite, folder, log, formation)
