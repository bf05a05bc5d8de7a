"""``codedyn data build --source planted``: held-out planted programs as verified correct / buggy pairs."""

import numpy as np
import pytest

from codedyn.config import CodedynConfig, DatasetConfig, PlantedTaskConfig
from codedyn.data.pairs import build_dataset, load_dataset
from codedyn.data.planted import PlantedGenerator, heldout_key
from codedyn.data.problems import planted_problems
from codedyn.data.sandbox import Outcome, SandboxLimits, run_program


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
    problems = {p.problem_id: p for p in planted_problems(8, 0, config.planted)}
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
