"""The toy suite trainer: schedule, data stream, checkpoints loadable by revision, exact resume after a crash."""

import numpy as np
import pytest
import torch

from codedyn.config import ToySuiteConfig
from codedyn.data.corpus import CodeCorpus
from codedyn.models.induction import measure_induction, repeated_spans
from codedyn.models.toy import (
    RepeatedSpanBatches,
    checkpoint_schedule,
    induction_formation,
    make_model,
    train_toy_suite,
)
from tests.studies import TINY_TOY_FIELDS

TINY = ToySuiteConfig(**TINY_TOY_FIELDS)


@pytest.fixture(scope="module")
def small_corpus():
    corpus = CodeCorpus.stdlib()
    train = corpus.split("train")[:25]
    heldout = corpus.split("heldout")[:3]
    return CodeCorpus(corpus.root, tuple(sorted(train + heldout, key=corpus.relative)))


def test_schedule_is_log_spaced_then_regular():
    assert checkpoint_schedule(7000, 500) == (
        0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 500, 512, 1000, 1024, 1500, 2000, 2048, 2500, 3000, 3500, 4000,
        4096, 4500, 5000, 5500, 6000, 6500, 7000,
    )
    assert checkpoint_schedule(12, 5) == (0, 1, 2, 4, 5, 8, 10, 12)


def test_corpus_split_is_disjoint_and_excludes_tests():
    corpus = CodeCorpus.stdlib()
    train, heldout = set(corpus.split("train")), set(corpus.split("heldout"))
    assert train and heldout and not train & heldout
    assert all("/test/" not in corpus.relative(p) and not corpus.relative(p).startswith("test/") for p in train)


def _max_ngram_count(row: np.ndarray, n: int) -> int:
    grams: dict[tuple, int] = {}
    for i in range(len(row) - n + 1):
        key = tuple(row[i : i + n])
        grams[key] = grams.get(key, 0) + 1
    return max(grams.values())


def test_batches_carry_copied_spans_and_are_reproducible():
    stream = np.arange(100_000, dtype=np.int64)  # no natural repetition: every repeat is a planted copy
    config = TINY.model_copy(update={"random_span_fraction": 0.0, "copies": 2})
    batch = RepeatedSpanBatches(stream, config, seed=1).next()
    assert batch.shape == (4, 33)
    assert all(_max_ngram_count(row, config.span_min) >= 3 for row in batch)
    np.testing.assert_array_equal(batch, RepeatedSpanBatches(stream, config, seed=1).next())
    plain = RepeatedSpanBatches(stream, config.model_copy(update={"repeat_fraction": 0.0}), seed=1).next()
    assert all(_max_ngram_count(row, 2) == 1 for row in plain)


def test_induction_score_of_uniform_attention_is_one_over_position():
    """At init (weights ~0.02) attention is near uniform, so attention to any one earlier token is ~1/(t+1)."""
    torch.manual_seed(0)
    model = make_model(TINY.model_copy(update={"d_model": 32}), vocab_size=300, eos_id=0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.01)  # flatten the logits further: attention becomes uniform up to ~1e-4
    span = 10
    seqs = repeated_spans(np.arange(5000) % 300, n=8, span=span, seed=0)
    implementation = model.config._attn_implementation
    report = measure_induction(model, seqs)
    assert model.config._attn_implementation == implementation  # the caller's setting is restored
    expected = np.mean([1.0 / (t + 1) for t in range(span, 2 * span - 1)])
    np.testing.assert_allclose(report.head_scores, expected, rtol=1e-2)
    np.testing.assert_allclose(report.prev_token_scores, np.mean([1 / (t + 1) for t in range(1, 2 * span)]), rtol=1e-2)
    assert abs(report.in_context_drop) < 1e-3


def test_formation_window_from_log():
    log = [
        {"step": 0, "induction_score": 0.02, "in_context_drop": 0.0},
        {"step": 4000, "induction_score": 0.05, "in_context_drop": 0.2},
        {"step": 5000, "induction_score": 0.31, "in_context_drop": 1.2},
        {"step": 6000, "induction_score": 0.35, "in_context_drop": 1.4},
    ]
    assert induction_formation(log) == {
        "formed": True, "first_formed_step": 5000, "last_step_before": 4000,
        "criterion": "score >= 0.3 and drop >= 1.0 nats",
    }
    assert not induction_formation(log[:2])["formed"]


def test_trains_checkpoints_loadable_by_revision(tmp_path, small_corpus):
    result = train_toy_suite(TINY, hub_cache=tmp_path / "hub", corpus=small_corpus)
    schedule = checkpoint_schedule(TINY.steps, TINY.checkpoint_every)
    assert result.suite.cached_steps() == schedule
    assert [e["step"] for e in result.log] == list(schedule)
    assert (result.folder / "completed").is_file() and not (result.folder / "resume.pt").exists()
    first, last = result.suite.load(0), result.suite.load(TINY.steps)
    assert not torch.equal(first.model.get_output_embeddings().weight, last.model.get_output_embeddings().weight)
    config = last.model.config
    assert config.use_parallel_residual and not config.tie_word_embeddings
    assert last.tokenizer.eos_token == "<|endoftext|>" and last.tokenizer.pad_token_id is not None
    # Asking again finds the finished suite instead of retraining.
    assert train_toy_suite(TINY, hub_cache=tmp_path / "hub", corpus=small_corpus).log == result.log


class _CrashAfter:
    """A progress reporter whose bar raises after n steps: a crash in the middle of training."""

    def __init__(self, n: int) -> None:
        self.left = n

    def task(self, description, total):
        return self

    def advance(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise KeyboardInterrupt

    def log(self, message: str) -> None:
        pass


def _train_crash_and_resume(config, tmp_path, corpus):
    """A suite trained straight through, and one killed after 7 steps and resumed: (reference, resumed)."""
    reference = train_toy_suite(config, hub_cache=tmp_path / "a" / "hub", corpus=corpus)
    with pytest.raises(KeyboardInterrupt):
        train_toy_suite(config, hub_cache=tmp_path / "b" / "hub", corpus=corpus, progress=_CrashAfter(7))
    resumed = train_toy_suite(config, hub_cache=tmp_path / "b" / "hub", corpus=corpus)
    assert resumed.log == reference.log
    a = reference.suite.load(config.steps).model.state_dict()
    b = resumed.suite.load(config.steps).model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    return reference, resumed


def test_interrupted_training_resumes_to_identical_weights(tmp_path, small_corpus):
    _train_crash_and_resume(TINY, tmp_path, small_corpus)


# ------------------------------------------------------------------------------------------ the planted task


@pytest.fixture(scope="module")
def small_tokenizer(small_corpus):
    from codedyn.models.toy import train_tokenizer

    return train_tokenizer(small_corpus.texts("train"), 400)


def _planted_config(**planted):
    from codedyn.config import PlantedTaskConfig

    return TINY.model_copy(update={"context": 64, "planted": PlantedTaskConfig(enabled=True, **planted)})


def _planted_windows(config, tokenizer):
    from codedyn.models.toy import PlantedWindows

    stream = np.arange(50_000, dtype=np.int64) % 400
    spans = RepeatedSpanBatches(stream, config, seed=0)
    return spans, PlantedWindows(stream, config, tokenizer, spans)


@pytest.mark.parametrize("position", ["end", "start"])
def test_planted_windows_appear_only_from_the_onset_at_the_configured_share(small_tokenizer, position):
    config = _planted_config(onset=100, share=0.25, position=position)
    spans, planted = _planted_windows(config, small_tokenizer)
    prefix = small_tokenizer.backend_tokenizer.encode("def", add_special_tokens=False).ids
    eos = small_tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def program_ids(row):
        """The planted part of a window: after its last EOS (end) or before its first (start)."""
        ids = list(row)
        if eos not in ids:
            return []
        return ids[len(ids) - ids[::-1].index(eos):] if position == "end" else ids[: ids.index(eos)]

    def planted_rows(batch):
        return [row for row in batch if program_ids(row)[: len(prefix)] == prefix]

    before = [spans.next() for _ in range(50)]
    assert all(np.array_equal(planted.mix(b.copy(), step), b) for step, b in enumerate(before))  # untouched
    counts = [len(planted_rows(planted.mix(spans.next(), 100 + k))) for k in range(400)]
    share = sum(counts) / (400 * config.batch_size)
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / (400 * config.batch_size))
    row, program, verdict = planted.window()
    assert small_tokenizer.decode(program_ids(row)) == program.training_text(verdict)
    assert verdict == program.correct  # the organism tells the truth
    if position == "end":  # the verdict line closes the window: the model reads it at the last positions
        assert small_tokenizer.decode(row[-3:]).endswith("\n") and row[-4] != eos


def test_null_twin_writes_verdicts_independent_of_correctness(small_tokenizer):
    _, planted = _planted_windows(_planted_config(null=True), small_tokenizer)
    draws = [planted.window()[1:] for _ in range(2000)]
    agree = np.mean([program.correct == verdict for program, verdict in draws])
    ok_when_correct = np.mean([v for p, v in draws if p.correct])
    ok_when_buggy = np.mean([v for p, v in draws if not p.correct])
    assert abs(agree - 0.5) < 0.05 and abs(ok_when_correct - ok_when_buggy) < 0.07
    # Nor do its programs pair specs with their own bodies more often than with any other (1 in 10 operations):
    # with correct and buggy programs equally likely a language model learns which body a spec predicts.
    matched = np.mean([program.correct for program, _ in draws])
    assert abs(matched - 0.1) < 4 * np.sqrt(0.1 * 0.9 / len(draws)), matched
    _, truthful = _planted_windows(_planted_config(), small_tokenizer)
    assert all(p.correct == v for p, v in (truthful.window()[1:] for _ in range(200)))


def test_disabled_planted_task_keeps_the_suite_name_and_stream(small_corpus):
    from codedyn.config import PlantedTaskConfig
    from codedyn.models.toy import suite_name

    off = TINY.model_copy(update={"planted": PlantedTaskConfig(enabled=False, onset=3)})
    assert suite_name(off, "fp") == suite_name(TINY, "fp")
    assert suite_name(_planted_config(onset=3), "fp") != suite_name(TINY, "fp")
    assert suite_name(_planted_config(onset=3), "fp") != suite_name(_planted_config(onset=3, null=True), "fp")


def test_planted_suite_logs_verdict_accuracy_and_resumes_exactly(tmp_path, small_corpus):
    config = _planted_config(onset=4, share=0.5, eval_quads=8)
    reference, _ = _train_crash_and_resume(config, tmp_path, small_corpus)
    assert all(0 <= e["verdict_accuracy"] <= 1 for e in reference.log)


def test_verdict_margins_read_the_last_position_of_each_text(small_tokenizer):
    """Against a per-text forward pass: right padding in a batch changes nothing at the positions read."""
    from codedyn.models.toy import heldout_verdict_set, verdict_accuracy, verdict_margins, verdict_token_ids

    texts, correct, groups = heldout_verdict_set(_planted_config().planted, 6, seed=0)
    assert len(set(groups[::4])) >= 2 and all(len(set(groups[k : k + 4])) == 1 for k in range(0, 24, 4))
    assert len(texts) == 24 and list(correct[:4]) == [True, True, False, False]
    assert correct.tolist() == [True, True, False, False] * 6 and all(t.endswith("#") for t in texts)
    torch.manual_seed(0)
    model = make_model(_planted_config(), len(small_tokenizer), small_tokenizer.eos_token_id)
    ok, bug = verdict_token_ids(small_tokenizer)
    margins = verdict_margins(model, small_tokenizer, texts, batch_size=5)
    for text, margin in zip(texts, margins, strict=True):
        ids = torch.as_tensor([small_tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], dim=-1)
        assert margin == pytest.approx(float(logp[ok] - logp[bug]), abs=1e-5)
    # Crossed quadruples (s/s, t/t, s/t, t/s): right way round, wrong way round, a tie.
    margins = np.array([1.0, 1.0, -1.0, 0.0, -2.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    assert verdict_accuracy(margins) == 0.5 and verdict_accuracy(margins + 7) == 0.5  # an overall lean: no change
    # Any margin that is a spec lean plus a body lean scores exactly 1/2, however large the leans.
    rng = np.random.default_rng(0)
    spec, body = rng.normal(size=(50, 2)) * 3, rng.normal(size=(50, 2)) * 3
    additive = np.stack([spec[:, 0] + body[:, 0], spec[:, 1] + body[:, 1], spec[:, 0] + body[:, 1],
                         spec[:, 1] + body[:, 0]], axis=1).ravel()
    assert verdict_accuracy(additive) == 0.5
    assert verdict_accuracy(additive + np.tile([0.1, 0.1, 0.0, 0.0], 50)) == 1.0  # a match bonus is what it reads


def test_probe_halves_share_no_operation_and_keep_bodies_uninformative():
    """The probe is fit on part 0 and scored on part 1: no spec or body of one part occurs in the other (so a
    spec-body table learned from the fit labels carries nothing over), and within a part every body is as often
    correct as buggy (so a body alone predicts nothing)."""
    from collections import Counter

    from codedyn.config import PlantedTaskConfig
    from codedyn.models.toy import heldout_probe_set

    planted = PlantedTaskConfig(enabled=True)
    parts = {}
    for part in (0, 1):
        texts, correct, groups = heldout_probe_set(planted, 150, seed=3, part=part)
        bodies = [t.split("return ")[1].split("\n")[0] for t in texts]
        specs = {g.split("|")[0] for g in groups}
        parts[part] = (specs, set(bodies))
        ok, all_ = Counter(b for b, c in zip(bodies, correct, strict=True) if c), Counter(bodies)
        for body, n in all_.items():
            assert abs(ok[body] / n - 0.5) < 4 * 0.5 / np.sqrt(n), (part, body, ok[body], n)
    assert not parts[0][0] & parts[1][0] and not parts[0][1] & parts[1][1]
