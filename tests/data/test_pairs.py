"""The dataset build, end to end through the real sandbox and mutation operators."""

import json
from collections import Counter

import pytest

from codedyn.config import DatasetConfig
from codedyn.data.mutate import Mutant
from codedyn.data.pairs import (
    Candidate,
    build_dataset,
    load_dataset,
    select_mutants,
    split_problems,
)
from codedyn.data.problems import DataSourceError, Problem
from codedyn.data.sandbox import Outcome, SandboxLimits, run_program
from codedyn.paths import cache_dir
from codedyn.runs.store import staging_dir


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(home))
    config = DatasetConfig(limit_problems=16, candidates_per_operator=1)
    path = build_dataset(config, out_dir=home / "out")
    yield config, path, home
    mp.undo()


def test_build_pairs_every_problem_with_a_proven_bug(small_build):
    _, path, _ = small_build
    data = load_dataset(path)
    frame = data.samples
    assert data.card["n_pairs"] >= 14  # nearly every HumanEval problem yields an assertion-failing mutant
    per_problem = frame.groupby("problem_id")["label"].value_counts().unstack(fill_value=0)
    assert (per_problem["correct"] == 1).all() and (per_problem["incorrect"] == 1).all()
    assert set(frame.loc[~frame["is_correct"], "failure_kind"]) == {"assertion"}
    pairs = data.pairs()
    assert len(pairs) == data.card["n_pairs"]
    assert (pairs["problem_id_incorrect"] == pairs["problem_id_correct"]).all()
    assert (pairs["prompt_incorrect"] == pairs["prompt_correct"]).all()


def test_labels_hold_when_rechecked_independently(small_build):
    """Re-run a few samples through the sandbox: references pass, mutants fail an assertion."""
    _, path, _ = small_build
    frame = load_dataset(path).samples
    from codedyn.data.problems import humaneval_problems

    problems = {p.problem_id: p for p in humaneval_problems()}
    for _, row in frame.head(6).iterrows():
        result = run_program(problems[row["problem_id"]].program(row["solution"]), SandboxLimits(timeout_s=10))
        expected = Outcome.PASSED if row["is_correct"] else Outcome.ASSERTION
        assert result.outcome == expected, row["sample_id"]


def test_no_problem_crosses_splits(small_build):
    _, path, _ = small_build
    frame = load_dataset(path).samples
    splits_per_problem = frame.groupby("problem_id")["split"].nunique()
    assert (splits_per_problem == 1).all()
    assert set(frame["split"]) <= {"analysis", "tuning", "validation"}


def test_rebuild_gives_same_hash_and_resumes_from_cache(small_build, monkeypatch):
    config, path, home = small_build
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    results_file = cache_dir("executions") / "results.jsonl"
    lines = results_file.read_text().splitlines(keepends=True)
    # Simulate a build killed half-way: drop half of the recorded results and the finished dataset.
    results_file.write_text("".join(lines[: len(lines) // 2]) + '{"key": "torn line')
    samples_before = (path / "samples.jsonl").read_text()
    import shutil

    shutil.rmtree(path)
    rebuilt = build_dataset(config, out_dir=home / "out")
    assert rebuilt == path
    assert (rebuilt / "samples.jsonl").read_text() == samples_before
    rerun = len(results_file.read_text().splitlines()) - (len(lines) // 2 + 1)
    assert 0 < rerun <= len(lines) - len(lines) // 2  # only the lost half ran again
    again = build_dataset(config, out_dir=home / "out")  # everything cached: no new runs
    assert again == path
    assert len(results_file.read_text().splitlines()) == len(lines) // 2 + 1 + rerun


def test_card_records_counts(small_build):
    _, path, _ = small_build
    card = json.loads((path / "card.json").read_text())
    assert card["n_correct"] + card["n_incorrect"] == card["n_samples"]
    assert sum(card["operators"].values()) == card["n_pairs"]
    assert sum(v["problems"] for v in card["splits"].values()) == card["n_problems_used"]
    assert "| analysis |" in (path / "card.md").read_text()


PROBLEMS = [
    {"task_id": "U/ok", "prompt": "def inc(x):\n", "solution": "    y = x + 1\n    return y\n",
     "test": "def check(f):\n    assert f(1) == 2\n    assert f(-3) == -2\n", "entry_point": "inc"},
    {"task_id": "U/broken", "prompt": "def dec(x):\n", "solution": "    return x + 1\n",
     "test": "def check(f):\n    assert f(1) == 0\n", "entry_point": "dec"},
]
HOSTILE = {
    "loops_forever": "    while True:\n        pass\n",
    "allocates_50gb": "    b = bytearray(50 * 1024**3)\n    return x + 1\n",
    "writes_10gb": "    with open('big', 'wb') as fh:\n        for _ in range(10240):\n"
                   "            fh.write(b'0' * 1024 * 1024)\n    return x + 1\n",
    "kills_parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return x + 1\n",
    "opens_socket": "    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n    return x + 1\n",
    "forks": "    import os\n    for _ in range(50):\n"
             "        if os.fork() == 0:\n            import time; time.sleep(30)\n    return x + 1\n",
    "correct": "    return x + 1\n",
}


def test_user_problems_with_failing_reference_and_hostile_completions(tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    completions = tmp_path / "generations.jsonl"
    completions.write_text("".join(
        json.dumps({"task_id": "U/ok", "completion": code, "completion_id": name}) + "\n"
        for name, code in HOSTILE.items()
    ))
    config = DatasetConfig(
        source="jsonl", problems_path=problems, completions_path=completions,
        sandbox={"timeout_s": 3, "cpu_s": 3, "memory_mb": 512},
    )
    data = load_dataset(build_dataset(config, out_dir=tmp_path / "out"))
    assert data.card["failed_references"] == {"U/broken": "assertion"}
    labels = data.samples.set_index("sample_id")
    assert labels.loc["correct", "label"] == "correct"
    for name in ("loops_forever", "allocates_50gb", "writes_10gb", "kills_parent", "opens_socket"):
        assert labels.loc[name, "label"] == "incorrect", name
    assert labels.loc["loops_forever", "failure_kind"] == "timeout"
    assert not list((tmp_path / "out").glob(".*partial"))


def test_completion_for_unknown_problem_is_a_clear_error(tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps(PROBLEMS[0]) + "\n")
    completions = tmp_path / "gen.jsonl"
    completions.write_text(json.dumps({"task_id": "U/nope", "completion": "    return 1\n"}) + "\n")
    config = DatasetConfig(source="jsonl", problems_path=problems, completions_path=completions)
    with pytest.raises(DataSourceError, match="unknown problem 'U/nope'"):
        build_dataset(config, out_dir=tmp_path / "out")


def _candidate(problem_id: str, operator: str, site: int = 0) -> Candidate:
    problem = Problem(problem_id, "", "", "", "f", "test")
    return Candidate(problem, Mutant(operator, "", 1, "", "", site))


def test_selection_balances_operators_and_is_deterministic():
    operators = ("a", "b", "c", "d")
    pool = {f"P{i}": [_candidate(f"P{i}", op, s) for op in operators for s in range(2)] for i in range(40)}
    selection = select_mutants(pool, k=1, seed=3, operators=operators)
    counts = Counter(c.mutant.operator for picks in selection.values() for c in picks)
    assert set(counts.values()) == {10}
    assert selection == select_mutants(pool, k=1, seed=3, operators=operators)
    two = select_mutants(pool, k=2, seed=3, operators=operators)
    assert all(len({c.mutant.operator for c in picks}) == 2 for picks in two.values())


def test_split_fractions_and_determinism():
    ids = [f"P{i}" for i in range(100)]
    config = DatasetConfig(seed=1)
    assignment = split_problems(ids, config)
    assert Counter(assignment.values()) == {"analysis": 50, "tuning": 10, "validation": 40}
    assert assignment == split_problems(list(reversed(ids)), config)
    assert assignment != split_problems(ids, DatasetConfig(seed=2))
    # A split the source fixes is kept; the other problems share the remaining splits in proportion.
    fixed = {f"P{i}": "validation" for i in range(40)}
    assignment = split_problems(ids, config, fixed)
    assert all(assignment[k] == "validation" for k in fixed)
    assert Counter(assignment.values()) == {"analysis": 50, "tuning": 10, "validation": 40}
    with pytest.raises(ValueError, match="unknown fixed split"):
        split_problems(ids, config, {"P0": "test"})


def test_staging_dir_never_leaves_a_half_written_result(tmp_path):
    final = tmp_path / "result"
    with pytest.raises(RuntimeError):
        with staging_dir(final) as stage:
            (stage / "part.txt").write_text("half")
            raise RuntimeError("killed")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
