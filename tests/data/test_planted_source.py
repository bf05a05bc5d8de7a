"""``codedyn data build --source planted``: held-out planted programs as verified correct / buggy pairs."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from codedyn.config import CodedynConfig, DatasetConfig, PlantedTaskConfig
from codedyn.data.pairs import build_dataset, load_dataset
from codedyn.data.planted import FAMILIES, PlantedGenerator, heldout_key
from codedyn.data.problems import planted_problems
from codedyn.data.sandbox import Outcome, SandboxLimits, run_program
from codedyn.runs.layout import SPLITS


def test_planted_problems_are_heldout_programs_read_at_the_verdict_position():
    planted = PlantedTaskConfig()
    problems = planted_problems(40, seed=0, planted=planted)
    assert len({p.problem_id for p in problems}) == 40 and len({p.prompt + p.solution for p in problems}) == 40
    for problem in problems:
        assert problem.solution.endswith("\n#") and problem.mutants[0].endswith("\n#")
        assert heldout_key(problem.prompt + problem.solution[:-1]) < planted.heldout_share
    # Disjoint from what the training stream draws (which redraws every held-out program).
    rng = np.random.default_rng(0)
    generator = PlantedGenerator(heldout_share=planted.heldout_share)
    train = {generator.draw(rng, split="train").text for _ in range(5000)}
    assert not train & {p.prompt + p.solution[:-1] for p in problems}
    assert [p.prompt for p in planted_problems(5, 1, planted)] != [p.prompt for p in problems[:5]]


def test_build_verifies_each_planted_pair_in_the_sandbox(tmp_path):
    config = DatasetConfig(source="planted", planted_problems=8, candidates_per_operator=1,
                           sandbox={"timeout_s": 5, "cpu_s": 5, "memory_mb": 512})
    data = load_dataset(build_dataset(config, out_dir=tmp_path / "out"))
    frame = data.samples
    assert data.card["n_pairs"] == 8 and set(frame["source"]) == {"planted"}
    problems = {p.problem_id: p for p in planted_problems(8, 0, config.planted, config.splits.validation)}
    for _, row in frame.iterrows():
        problem = problems[row["problem_id"]]
        assert row["solution"] == (problem.solution if row["is_correct"] else problem.mutants[0])
        result = run_program(problem.program(row["solution"]), SandboxLimits(timeout_s=10))
        assert result.outcome == (Outcome.PASSED if row["is_correct"] else Outcome.ASSERTION), row["sample_id"]


def test_dataset_and_suite_must_plant_the_same_programs():
    with pytest.raises(ValueError, match="disagree on"):
        CodedynConfig.model_validate({"dataset": {"source": "planted"},
                                      "toy": {"planted": {"enabled": True, "function_names": 10}}})
    CodedynConfig.model_validate({"dataset": {"source": "planted"}, "toy": {"planted": {"enabled": True,
                                                                                        "onset": 500}}})


def test_validation_programs_share_no_operation_with_the_programs_selection_sees():
    """The planted dataset's validation split draws spec and bug from the other half of the operations: a
    predictor selected on analysis and thresholded on tuning has seen none of them, so a spec-body table learnt
    from its labels carries nothing over (on the null twin, a probe with shared operations read 'sharp')."""
    config = DatasetConfig(source="planted", planted_problems=30, candidates_per_operator=1,
                           sandbox={"timeout_s": 5, "cpu_s": 5, "memory_mb": 512})
    frame = load_dataset(build_dataset(config, out_dir=Path(tempfile.mkdtemp()) / "out")).samples
    problems = {p.problem_id: p for p in planted_problems(30, 0, config.planted, config.splits.validation)}
    assert (frame["split"] == "validation").sum() == 2 * 12 and set(frame["split"]) == set(SPLITS)
    operations = {}
    for split in ("analysis+tuning", "validation"):
        rows = frame[frame["split"].isin(split.split("+"))]
        specs = {problems[pid].group.split("|")[0] for pid in rows["problem_id"]}
        bodies = {problems[pid].group.split("|")[1] for pid in rows["problem_id"]}
        operations[split] = specs | {FAMILIES["substitution"].operation(k).body for k in specs}, bodies
    family = FAMILIES["substitution"]
    halves = [{family.half(body) for body in operations[split][1]} for split in operations]
    assert halves == [{0}, {1}]
    assert not operations["analysis+tuning"][0] & operations["validation"][0]
    # The group is the operation pair each problem's samples share: what Experiment 2 resamples.
    assert set(frame["group"]) == {p.group for p in problems.values()} and frame["group"].nunique() < len(problems)


def test_the_halves_keep_every_mutation_edge_whole():
    family = FAMILIES["substitution"]
    halves = [[op.key for op in family.operations if family.half(op.body) == h] for h in (0, 1)]
    assert sorted(map(len, halves)) == [5, 5]
    for spec, body, _ in family.edge_operators:
        assert family.half(family.operation(spec).body) == family.half(body), (spec, body)
    assert {family.half(body) for _, body, _ in family.edge_operators} == {0, 1}
    rng = np.random.default_rng(0)
    generator = PlantedGenerator(("substitution",), heldout_share=0.4)
    for half in (0, 1):
        for _ in range(50):
            reference, buggy = generator.pair(rng, half=half)
            assert family.half(reference.body) == family.half(buggy.body) == half
    with pytest.raises(ValueError, match="half must be"):
        generator.pair(rng, half=2)
