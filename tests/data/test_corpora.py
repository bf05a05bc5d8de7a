"""User corpora for the SGLD windows, the SAE tokens and the general-text filter: files, globs, JSONL fields and
`datasets` names; one sentence for each unreadable corpus before any work; the defaults (and their cache keys)
unchanged."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from codedyn.cli import app
from codedyn.config import CorpusConfig, EmergenceConfig, SamplingConfig, load_config
from codedyn.data.corpus import (
    CodeCorpus,
    CorpusError,
    check_corpus,
    corpus_fingerprints,
    corpus_spec,
    load_corpus,
)
from codedyn.data.problems import DataSourceError, SourceUnavailable
from tests.arch_models import tiny_tokenizer
from tests.user_errors import built_nothing, one_sentence

runner = CliRunner()


def write_texts(folder, n, word):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i}.txt").write_text(f"{word} {i} " * 40)
    return folder


def write_records(path, n, word, field="text"):
    path.write_text("".join(json.dumps({field: f"{word} {i} " * 40, "id": i}) + "\n" for i in range(n)))
    return path


def test_files_globs_and_folders(tmp_path):
    write_texts(tmp_path / "a", 90, "alpha")
    write_texts(tmp_path / "b" / "deep", 10, "beta")
    corpus = load_corpus(CorpusConfig(source="files", paths=(str(tmp_path / "a" / "*.txt"), str(tmp_path / "b"))))
    assert len(corpus.files) == 100 and corpus.root == tmp_path
    train, held = corpus.split("train"), corpus.split("heldout")
    assert len(train) + len(held) == 100 and set(train).isdisjoint(held) and held  # crc32 of the relative path
    assert corpus.split("all") == corpus.files
    before = corpus.fingerprint
    (tmp_path / "a" / "doc3.txt").write_text("changed")
    assert CodeCorpus.from_paths((str(tmp_path / "a"), str(tmp_path / "b"))).fingerprint != before
    with pytest.raises(CorpusError, match=r"corpus path '.*nothing/\*\.txt' matches no file"):
        load_corpus(CorpusConfig(source="files", paths=(str(tmp_path / "nothing" / "*.txt"),)))


def test_jsonl_fields_and_their_mistakes(tmp_path):
    pile = write_records(tmp_path / "pile.jsonl", 60, "gamma")
    corpus = load_corpus(CorpusConfig(source="jsonl", paths=(str(pile),)))
    assert len(corpus.ids) == 60 and corpus.read(0).startswith("gamma 0")
    assert len(corpus.split("train")) + len(corpus.split("heldout")) == 60 and corpus.split("heldout")
    with pytest.raises(DataSourceError, match=r"pile.jsonl:1: missing or non-string field\(s\) \['body'\]"):
        load_corpus(CorpusConfig(source="jsonl", paths=(str(tmp_path / "pile.jsonl"),), field="body"))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataSourceError, match=r"latin1.jsonl:1: not UTF-8 text"):
        load_corpus(CorpusConfig(source="jsonl", paths=(str(tmp_path / "latin1.jsonl"),)))
    small = CorpusConfig(source="jsonl", paths=(str(write_records(tmp_path / "three.jsonl", 3, "x")),))
    with pytest.raises(CorpusError, match=r"the SAE corpus \(jsonl .*three.jsonl \[text\]\) has no heldout docum"):
        check_corpus(small, ("train", "heldout"), "SAE")


def test_datasets_offline_is_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailable, match="corpus datasets NeelNanda/pile-10k needs the network"):
        load_corpus(CorpusConfig(source="datasets", dataset="NeelNanda/pile-10k"))


def test_command_line_specs():
    assert corpus_spec("datasets:NeelNanda/pile-10k") == {"source": "datasets", "dataset": "NeelNanda/pile-10k",
                                                          "split": "train", "field": "text"}
    assert corpus_spec("data/pile.jsonl:contents") == {"source": "jsonl", "paths": ["data/pile.jsonl"],
                                                       "field": "contents"}
    assert corpus_spec("a.jsonl")["field"] == "text"
    assert corpus_spec("src/**/*.py, docs") == {"source": "files", "paths": ["src/**/*.py", "docs"]}


def test_defaults_dump_and_hash_as_before_and_a_user_corpus_changes_the_keys(tmp_path):
    from codedyn.sampling.posterior import posterior_key

    default = load_config("default")
    assert "corpus" not in default.sampling.model_dump() and "general_corpus" not in default.emergence.model_dump()
    assert corpus_fingerprints(corpus=None, general_corpus=None) == {}
    user = CorpusConfig(source="files", paths=(str(write_texts(tmp_path / "c", 25, "delta")),))
    sampling = SamplingConfig(corpus=user)
    assert sampling.model_dump(mode="json")["corpus"]["paths"] == [str(tmp_path / "c")]
    key = posterior_key("s", 1, "d", sampling)
    assert key != posterior_key("s", 1, "d", SamplingConfig())
    (tmp_path / "c" / "doc0.txt").write_text("edited")
    from codedyn.data import corpus as corpus_module

    corpus_module._load_user_corpus.cache_clear()  # a new process would read the edited file
    assert posterior_key("s", 1, "d", sampling) != key
    full = load_config("default", {"sampling": {"corpus": user.model_dump(mode="json")}})
    assert full.model_dump(mode="json")["sampling"]["corpus"]["source"] == "files"  # what the manifest records


def test_windows_come_from_the_user_corpora(tmp_path):
    from codedyn.models.activations import sae_windows
    from codedyn.sampling.posterior import sampling_windows

    tokenizer = tiny_tokenizer()
    code = CorpusConfig(source="files", paths=(str(write_texts(tmp_path / "code", 40, "for")),))
    general = CorpusConfig(source="jsonl", paths=(str(write_records(tmp_path / "g.jsonl", 5, "print")),))

    def words(windows):
        return set(tokenizer.decode(np.asarray(windows).reshape(-1).tolist()).split())

    windows = sampling_windows(tokenizer, SamplingConfig(corpus=code, sampling_windows=8, window_length=16))
    assert windows.shape == (8, 16) and "for" in words(windows) and "def" not in words(windows)
    config = EmergenceConfig(corpus=code, general_corpus=general, train_tokens=256, window_length=16,
                             eval_windows=4, general_windows=10)
    train, held, general_windows = sae_windows(tokenizer, config)
    assert train.shape == (16, 16) and held.shape == (4, 16) and general_windows.shape == (10, 16)
    assert "print" in words(general_windows) and "for" not in words(general_windows)
    assert "for" in words(held) and "print" not in words(held)
    # without a general corpus the general windows are the SAE corpus' held-out split, as before
    _, held2, general2 = sae_windows(tokenizer, config.model_copy(update={"general_corpus": None}))
    assert held2.shape == (4, 16) and general2.shape == (10, 16) and "for" in words(general2)


def test_cli_refuses_unreadable_corpora_before_any_work(empty_home, tmp_path):
    result = runner.invoke(app, ["run", "--corpus", str(tmp_path / "none" / "*.txt"), "--out", str(tmp_path / "r")])
    assert one_sentence(result, "none/*.txt' matches no file")
    pile = write_records(tmp_path / "pile.jsonl", 30, "word")
    result = runner.invoke(app, ["run", "--general-corpus", f"{pile}:body", "--out", str(tmp_path / "r")])
    assert one_sentence(result, "pile.jsonl:1: missing or non-string field(s) ['body']")
    assert built_nothing(empty_home)


def test_default_corpus_windows_are_encoded_once_per_tokenizer(monkeypatch):
    """The checkpoints of one suite share a tokenizer: the second posterior gets the same windows without encoding
    the corpus again; another tokenizer or other settings encode anew."""
    import torch

    from codedyn.sampling import posterior

    encoded = []
    real = posterior.sample_windows
    monkeypatch.setattr(posterior, "sample_windows", lambda *a, **k: encoded.append(1) or real(*a, **k))
    monkeypatch.setattr(posterior, "_WINDOWS", {})
    tokenizer, config = tiny_tokenizer(), SamplingConfig(sampling_windows=8, window_length=16)
    first = posterior.sampling_windows(tokenizer, config)
    first[0, 0] = -1  # a caller's change does not reach the kept windows
    again = posterior.sampling_windows(tiny_tokenizer(), config)
    assert len(encoded) == 1 and again[0, 0] != -1
    monkeypatch.setattr(posterior, "_WINDOWS", {})
    assert torch.equal(again, posterior.sampling_windows(tokenizer, config)) and len(encoded) == 2
    posterior.sampling_windows(tokenizer, config.model_copy(update={"seed": 1}))
    assert len(encoded) == 3
