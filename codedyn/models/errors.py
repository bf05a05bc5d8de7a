"""The error every suite, checkpoint or architecture problem is raised as, below the modules that raise it.

:mod:`codedyn.models.suite` (unknown suites, missing revisions) and :mod:`codedyn.models.hooks` (an architecture
codedyn cannot hook) both raise it, and the suite checks architectures with the hooks' table, so it lives here.
"""

from __future__ import annotations


class SuiteError(ValueError):
    """A suite or revision that cannot be used; the message says what and how to fix it."""
