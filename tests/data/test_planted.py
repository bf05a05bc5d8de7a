"""The planted task's program generator: balance, decidability, alignment with the mutation operators, held-out
disjointness."""

import re
from collections import Counter

import numpy as np
import pytest

from codedyn.config import PLANTED_FAMILY_NAMES, PlantedTaskConfig
from codedyn.data.mutate import mutate
from codedyn.data.planted import (
    ARGUMENT_NAMES,
    FAMILIES,
    FUNCTION_NAMES,
    PLANTED_FAMILIES,
    SUBSTITUTION,
    PlantedError,
    PlantedGenerator,
    heldout_key,
)


def _draws(generator: PlantedGenerator, n: int, seed: int = 0, split: str = "any"):
    rng = np.random.default_rng(seed)
    return [generator.draw(rng, split=split) for _ in range(n)]


def _body_shape(program) -> str:
    """The return line with the arguments replaced by their signature position: what the body says on its own."""
    line = program.solution
    for index, name in enumerate(program.arguments):
        line = re.sub(rf"\b{re.escape(name)}\b", f"ARG{index}", line)
    return f"{program.family}:{line.strip()}"


def test_config_and_generator_agree_on_families_and_pools():
    assert PLANTED_FAMILY_NAMES == PLANTED_FAMILIES
    fields = PlantedTaskConfig.model_fields
    assert fields["function_names"].metadata[-1].le == len(FUNCTION_NAMES)
    assert fields["argument_names"].metadata[-1].le == len(ARGUMENT_NAMES)
    assert {f.operator for f in FAMILIES.values()} == {
        "comparison_swap", "arithmetic_swap", "boolean_swap", "off_by_one", "return_value", "argument_swap",
        SUBSTITUTION}
    with pytest.raises(PlantedError, match="unknown planted"):
        PlantedGenerator(["comparison", "typo"])


def test_neither_spec_nor_body_alone_predicts_correctness():
    programs = _draws(PlantedGenerator(), 40_000)
    assert abs(np.mean([p.correct for p in programs]) - 0.5) < 0.01
    for key in ("spec", "body"):
        groups: dict[str, list[bool]] = {}
        for p in programs:
            groups.setdefault(f"{p.family}:{p.spec}" if key == "spec" else _body_shape(p), []).append(p.correct)
        for name, labels in groups.items():
            n = len(labels)
            # 4.5 binomial sd: no group of the ~60 strays by chance, a 60/40 imbalance in a group of 300+ fails.
            assert abs(np.mean(labels) - 0.5) < 4.5 * 0.5 / np.sqrt(n), (key, name, n, np.mean(labels))


def _distinct_counts(programs) -> tuple[Counter, Counter]:
    correct = Counter(p.text for p in programs if p.correct)
    buggy = Counter(p.text for p in programs if not p.correct)
    return correct, buggy


def test_correct_and_buggy_programs_are_equally_frequent_as_distinct_programs():
    """The pilot's confound: with few names each correct program recurred 9x as often as each buggy one. One buggy
    twin per correct program (picked by a hash of its text) makes the classes equally frequent by construction."""
    operator_families = [name for name in PLANTED_FAMILIES if name != "substitution"]
    correct, buggy = _distinct_counts(_draws(PlantedGenerator(operator_families), 30_000, seed=1))
    assert abs(len(correct) / len(buggy) - 1) < 0.05
    mean_correct = sum(correct.values()) / len(correct)
    mean_buggy = sum(buggy.values()) / len(buggy)
    assert mean_correct < 1.02 and mean_buggy < 1.02  # almost every program is new
    # Pools as small as the pilot's, where programs recur many times: still as many distinct buggy programs as
    # correct ones, each as frequent (drawing the bug afresh for every program gave 9x as many buggy ones).
    for families in (["comparison"], ["substitution"]):
        small = PlantedGenerator(families, function_names=12, argument_names=2)
        correct, buggy = _distinct_counts(_draws(small, 20_000))
        assert abs(len(buggy) / len(correct) - 1) < 0.05, families
        ratio = (sum(correct.values()) / len(correct)) / (sum(buggy.values()) / len(buggy))
        assert abs(ratio - 1) < 0.08, (families, ratio)


def test_every_program_is_decided_by_its_own_test():
    generator = PlantedGenerator()
    rng = np.random.default_rng(2)
    for _ in range(600):
        reference, buggy = generator.pair(rng, split="any")
        assert reference.test() == buggy.test()  # one test per spec, whichever body it is run on
        assert reference.correct and not buggy.correct and buggy.reference == reference.text
        exec(reference.text + reference.test() + f"\ncheck({reference.entry_point})\n", {})
        with pytest.raises(AssertionError):
            exec(buggy.text + buggy.test() + f"\ncheck({buggy.entry_point})\n", {})


def test_bugs_are_mutants_of_the_dataset_operators():
    """A bug labelled with a mutation operator is one of the mutants that operator makes of the correct program; a
    substitution (the whole body replaced by another operation's) is made by none of them."""
    from codedyn.config import MUTATION_OPERATORS

    generator = PlantedGenerator()
    rng = np.random.default_rng(3)
    seen = Counter()
    for _ in range(400):
        reference, buggy = generator.pair(rng, split="any")
        assert reference.operator == buggy.operator
        if buggy.operator == SUBSTITUTION:
            made = {m.solution for m in mutate(reference.prompt, reference.solution, list(MUTATION_OPERATORS))}
            assert buggy.solution not in made, (reference.text, buggy.solution)
        else:
            made = {m.solution for m in mutate(reference.prompt, reference.solution, [buggy.operator])}
            assert buggy.solution in made, (buggy.operator, reference.text, buggy.solution)
        seen[buggy.operator] += 1
    assert set(seen) == {f.operator for f in FAMILIES.values()}


def test_substitution_family_labels_every_edge_a_mutation_makes():
    """The substitution family's edge labels are exactly the edges codedyn.data.mutate makes."""
    from codedyn.config import MUTATION_OPERATORS

    family = FAMILIES["substitution"]
    generator = PlantedGenerator(["substitution"], function_names=1)
    rng = np.random.default_rng(0)
    by_spec = {}
    while len(by_spec) < len(family.operations):
        reference, _ = generator.pair(rng, split="any")
        by_spec[reference.spec] = reference
    names = {"u": "a", "v": "b"}
    for spec, body in family.bugs:
        reference = by_spec[spec]
        solution = f"    return {body.format(**names)}\n"
        makers = [op for op in MUTATION_OPERATORS
                  if solution in {m.solution for m in mutate(reference.prompt, reference.solution, [op])}]
        assert family.bug_operator(spec, body) == (makers[0] if makers else SUBSTITUTION), (spec, body, makers)


def test_heldout_programs_are_never_drawn_for_training():
    generator = PlantedGenerator(heldout_share=0.1)
    train = _draws(generator, 5000, seed=4, split="train")
    heldout = _draws(generator, 2000, seed=5, split="heldout")
    assert all(heldout_key(p.reference) >= 0.1 for p in train)
    assert all(heldout_key(p.reference) < 0.1 for p in heldout)
    assert not {p.text for p in train} & {p.text for p in heldout}
    assert not {p.reference for p in train} & {p.reference for p in heldout}  # no twin of a held-out pair either
    rng = np.random.default_rng(6)
    for _ in range(200):
        reference, buggy = generator.pair(rng, split="heldout")
        assert heldout_key(reference.text) < 0.1 and buggy.reference == reference.text


def test_draws_are_reproducible_and_seed_dependent():
    generator = PlantedGenerator()
    assert [p.text for p in _draws(generator, 50, seed=7)] == [p.text for p in _draws(generator, 50, seed=7)]
    assert [p.text for p in _draws(generator, 50, seed=7)] != [p.text for p in _draws(generator, 50, seed=8)]


def test_training_text_ends_in_the_verdict_line():
    program = _draws(PlantedGenerator(), 1)[0]
    assert program.training_text(True) == program.text + "# ok\n"
    assert program.training_text(False) == program.text + "# bug\n"
    assert program.text == program.prompt + program.solution and program.text.count("\n") == 3
