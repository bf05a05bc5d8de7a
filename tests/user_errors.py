"""Checks that a command stopped on a user mistake: one sentence, exit code 2, no traceback, and no work started
(shared by the input-first, corpus and suite tests; the ``empty_home`` fixture of conftest.py gives them an empty
cache)."""

from __future__ import annotations


def built_nothing(home):
    """Neither a dataset, nor a mutant execution, nor a toy suite was started."""
    for kind in ("datasets", "executions", "suites"):
        folder = home / kind
        assert not folder.exists() or not any(folder.rglob("*")), f"{kind} work started: {list(folder.rglob('*'))}"
    return True


def one_sentence(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in text, text
    return True
