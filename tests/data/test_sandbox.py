"""Tests for codedyn.data.sandbox: outcome classification, containment of misbehaving programs, cleanup.

Most behaviour is checked in two modes: the strongest one this machine supports (namespaces + dropped
privileges when run as root) and the plain fallback every machine gets (process group + rlimits), so the
fallback stays correct even on a developer box where the isolated mode is the default.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from codedyn.data import sandbox
from codedyn.data.sandbox import ExecutionResult, Outcome, SandboxLimits, run_program, run_programs

REPORT = sandbox.isolation_report()
SELECTED = sandbox._selected_mode()
PLAIN = sandbox._Mode(use_namespaces=False, drop_privileges=False)
MODES = [pytest.param(SELECTED, id="selected")]
if SELECTED != PLAIN:
    MODES.append(pytest.param(PLAIN, id="plain"))

FAST = SandboxLimits(timeout_s=1.0, cpu_s=5)

needs = {
    key: pytest.mark.skipif(not REPORT[key], reason=f"{key} not available on this machine") for key in REPORT
}


def run(source: str, limits: SandboxLimits = FAST, mode: sandbox._Mode = SELECTED) -> ExecutionResult:
    return sandbox._run_program(textwrap.dedent(source), limits, mode)


def processes_mentioning(text: str) -> list[int]:
    """Pids (other than ours) whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


REAP_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def sandbox_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point tempfile at a dedicated directory; afterwards it must be empty and no process may still
    mention it (every sandbox process has the job path, inside it, on its command line)."""
    root = tmp_path / "sandbox-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    # A killed process can stay visible in /proc for a moment while the kernel tears it down: allow it a grace
    # period, then insist that nothing is left.
    deadline = time.monotonic() + REAP_GRACE_S
    while processes_mentioning(str(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(str(root)) == []
    assert list(root.iterdir()) == []


# --- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_passing_program(mode: sandbox._Mode) -> None:
    # Typical HumanEval imports: the stdlib must stay importable after privileges are dropped.
    source = "from typing import List\nimport collections, hashlib, heapq, math, re\n"
    source += "print('hello')\nassert 1 + 1 == 2\n"
    result = run(source, mode=mode)
    assert result.outcome is Outcome.PASSED
    assert (result.returncode, result.error_type, result.stdout) == (0, "", "hello\n")


@pytest.mark.parametrize("mode", MODES)
def test_assertion_failure(mode: sandbox._Mode) -> None:
    result = run(
        """
        def check(candidate):
            assert candidate(2) == 5, "wrong answer"
        print("before the tests")
        check(lambda x: x * 2)
        """,
        mode=mode,
    )
    assert result.outcome is Outcome.ASSERTION
    assert result.error_type == "AssertionError"
    assert result.stdout == "before the tests\n"  # buffered output survives the failure
    assert result.stderr.rstrip().endswith("AssertionError: wrong answer")
    assert 'File "program.py", line 3, in check' in result.stderr
    assert 'assert candidate(2) == 5, "wrong answer"' in result.stderr  # source lines are shown


@pytest.mark.parametrize(
    ("source", "error_type"),
    [
        ("1 / 0", "ZeroDivisionError"),
        ("[][1]", "IndexError"),
        ("None + 1", "TypeError"),
        ("def f(:\n    pass", "SyntaxError"),
        ("def f(): return f()\nf()", "RecursionError"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("raise SystemExit(3)", "SystemExit"),
        ("import sys\nsys.exit(0)\nassert False", "SystemExit"),  # exiting "successfully" before the tests
        ("import sys\nsys.exit()", "SystemExit"),
    ],
)
def test_exceptions_are_crashes(source: str, error_type: str) -> None:
    result = run(source)
    assert (result.outcome, result.error_type, result.returncode) == (Outcome.CRASH, error_type, 4)


@pytest.mark.parametrize("mode", MODES)
def test_os_exit_zero_before_the_tests_is_a_crash(mode: sandbox._Mode) -> None:
    result = run(
        """
        import os
        def check(candidate):
            assert candidate() == 1
        os._exit(0)
        check(lambda: 2)
        """,
        mode=mode,
    )
    assert (result.outcome, result.returncode, result.error_type) == (Outcome.CRASH, 0, "EarlyExit")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("ending", "expected"),
    [("assert False, 'failed'", Outcome.ASSERTION), ("os._exit(0)", Outcome.CRASH)],
)
def test_printed_or_forged_markers_are_ignored(ending: str, expected: Outcome, mode: sandbox._Mode) -> None:
    result = run(
        f"""
        import os, sys
        for text in ("passed", "0 child passed -", "0 supervisor exited 0"):
            print(text)
            print(text, file=sys.stderr)
        for name in (".codedyn-result", "result", "stdout"):
            with open(name, "w") as fh:
                fh.write("0 child passed -\\n0 supervisor exited 0\\n")
        sys.stdout.flush()
        {ending}
        """,
        mode=mode,
    )
    assert result.outcome is expected


@pytest.mark.parametrize(
    ("child", "parent", "expected"),
    [
        ("pass", "assert False", Outcome.ASSERTION),  # forked copy finishing normally must not report
        ("assert False", "pass", Outcome.PASSED),  # nor one that fails
    ],
)
def test_forked_copies_never_report(child: str, parent: str, expected: Outcome) -> None:
    result = run(
        f"""
        import os
        pid = os.fork()
        if pid == 0:
            {child}
        else:
            os.waitpid(pid, 0)
            {parent}
        """
    )
    assert result.outcome is expected


def test_classify_requires_nonce_and_matching_exit_status() -> None:
    classify = sandbox._classify
    ok = "n child passed -\nn supervisor exited 0\n"
    assert classify(ok, "n", 0, False) == (Outcome.PASSED, 0, "")
    assert classify(ok, "other", 0, False) == (Outcome.CRASH, 0, "SandboxError")
    assert classify("n child passed -\nn supervisor exited 3\n", "n", 3, False)[:2] == (Outcome.CRASH, 3)
    # Only the first child line counts (a second one can only come from a process that should not report).
    two = "n child passed -\nn child assertion AssertionError\nn supervisor exited 3\n"
    assert classify(two, "n", 3, False) == (Outcome.CRASH, 3, "EarlyExit")
    assert classify("n supervisor signaled 9\n", "n", -9, False) == (Outcome.CRASH, -9, "SIGKILL")
    assert classify("n supervisor timeout -\n", "n", 124, False) == (Outcome.TIMEOUT, None, "Timeout")
    assert classify("", "n", -9, False) == (Outcome.CRASH, -9, "SupervisorKilled")
    assert classify(ok, "n", 0, True) == (Outcome.TIMEOUT, None, "Timeout")


# --- containment -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "source",
    [
        "while True:\n    pass",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True:\n    time.sleep(0.1)",
    ],
    ids=["busy-loop", "ignores-sigterm"],
)
def test_hanging_programs_time_out(source: str, mode: sandbox._Mode) -> None:
    result = run(source, mode=mode)
    assert (result.outcome, result.returncode, result.error_type) == (Outcome.TIMEOUT, None, "Timeout")
    assert 1.0 <= result.duration_s < 3.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("tail", "expected"),
    [("pass", Outcome.PASSED), ("while True:\n    pass", Outcome.TIMEOUT)],
    ids=["returns", "hangs"],
)
def test_daemonised_grandchild_is_killed(tail: str, expected: Outcome, mode: sandbox._Mode) -> None:
    marker = f"codedyn-daemon-{uuid.uuid4().hex}"
    daemon = "import time\nopen('started', 'w').close()\nwhile True:\n    time.sleep(0.05)"
    source = (
        textwrap.dedent(
            f"""
            import os, sys, time
            if os.fork() == 0:
                os.setsid()  # leave the process group
                if os.fork() == 0:  # and the parent: re-parented, a classic daemon
                    os.execv(sys.executable, [sys.executable, "-c", {daemon!r}, {marker!r}])
                os._exit(0)
            os.wait()
            deadline = time.monotonic() + 10
            while not os.path.exists("started"):
                assert time.monotonic() < deadline, "the daemon never started"
                time.sleep(0.01)
            """
        )
        + tail
    )
    result = run(source, SandboxLimits(timeout_s=2.0), mode=mode)
    assert result.outcome is expected, result.stderr
    assert processes_mentioning(marker) == []


@pytest.mark.parametrize("mode", MODES)
def test_memory_limit(mode: sandbox._Mode) -> None:
    result = run("data = bytearray(50 * 2**30)", mode=mode)
    assert (result.outcome, result.error_type) == (Outcome.CRASH, "MemoryError")


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit(mode: sandbox._Mode) -> None:
    source = "with open('big', 'wb') as fh:\n    for _ in range(10 * 1024):\n        fh.write(bytes(2**20))"
    result = run(source, SandboxLimits(timeout_s=5.0, file_size_mb=2), mode=mode)
    assert (result.outcome, result.error_type) == (Outcome.CRASH, "OSError")
    assert "File too large" in result.stderr


@needs["private_workdir"]
def test_many_files_cannot_fill_the_disk() -> None:
    source = "for i in range(100_000):\n    with open(f'f{i}', 'wb') as fh:\n        fh.write(bytes(2**20))"
    result = run(source, SandboxLimits(timeout_s=5.0, file_size_mb=4))
    assert (result.outcome, result.error_type) == (Outcome.CRASH, "OSError")
    assert "No space left on device" in result.stderr
    assert result.duration_s < 2.0


@pytest.mark.parametrize("mode", MODES)
def test_unbounded_output_is_cut_and_ends_the_program(mode: sandbox._Mode) -> None:
    limits = SandboxLimits(timeout_s=5.0, file_size_mb=1, max_output_bytes=1000)
    result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", limits, mode=mode)
    assert (result.outcome, result.error_type) == (Outcome.CRASH, "OSError")
    assert result.stdout == "x" * 1000
    assert len(result.stderr.encode()) <= 1000


def test_output_keeps_head_of_stdout_and_tail_of_stderr() -> None:
    limits = SandboxLimits(max_output_bytes=100)
    source = """
        import sys
        print("HEAD" + "x" * 10_000)
        print("y" * 10_000, file=sys.stderr)
        print("\\xff\\u00e9", end="")
        assert False, "TAIL"
        """
    result = run(source, limits)
    assert result.outcome is Outcome.ASSERTION
    assert result.stdout.startswith("HEAD") and len(result.stdout) == 100
    assert result.stderr.endswith("AssertionError: TAIL\n") and len(result.stderr) <= 100


def test_cpu_limit() -> None:
    result = run("while True:\n    pass", SandboxLimits(timeout_s=10.0, cpu_s=1))
    assert result.outcome is Outcome.CRASH
    assert result.error_type in {"SIGXCPU", "SIGKILL"}
    assert result.duration_s < 4.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "attack",
    ["os.kill(os.getppid(), signal.SIGKILL)", "os.killpg(0, signal.SIGKILL)", "os.killpg(os.getpgrp(), 9)"],
)
def test_killing_parent_or_group_stays_inside(attack: str, mode: sandbox._Mode) -> None:
    result = run(
        f"import os, signal, time\n{attack}\ntime.sleep(30)", SandboxLimits(timeout_s=2.0), mode=mode
    )
    # Reaching this line means the caller survived. The program itself must end with a clear outcome:
    # killed / refused (CRASH), except that a namespace's init ignores SIGKILL sent from inside, so a
    # program still running as root there keeps sleeping until the timeout.
    if mode.drop_privileges or not mode.use_namespaces:
        assert result.outcome is Outcome.CRASH
    else:
        assert result.outcome in {Outcome.CRASH, Outcome.TIMEOUT}


@needs["pid_namespace"]
@needs["dropped_privileges"]
def test_kill_everything_stays_inside() -> None:
    result = run("import os, signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(30)")
    assert result.outcome is Outcome.CRASH


@needs["dropped_privileges"]
def test_fork_bomb_is_contained() -> None:
    result = run("import os\nwhile True:\n    os.fork()", SandboxLimits(timeout_s=3.0, max_processes=16))
    assert result.outcome in {Outcome.CRASH, Outcome.TIMEOUT}
    assert result.duration_s < 6.0


@needs["network_namespace"]
def test_network_is_unreachable() -> None:
    # The program checks it is in an empty network namespace before it tries anything, so no packet can
    # leave this machine even if the test were run somewhere the namespace silently did not apply.
    result = run(
        """
        import socket
        assert [name for _, name in socket.if_nameindex()] == ["lo"], "not isolated"
        socket.create_connection(("192.0.2.1", 80), timeout=5)  # TEST-NET-1, never routed
        """
    )
    assert (result.outcome, result.error_type) == (Outcome.CRASH, "OSError")
    assert result.duration_s < 3.0


@needs["read_only_filesystem"]
def test_cannot_write_outside_the_workdir() -> None:
    target = Path(f"/tmp/codedyn-escape-{uuid.uuid4().hex}")
    try:
        result = run(f"open({str(target)!r}, 'w').write('escaped')")
        assert (result.outcome, result.error_type) == (Outcome.CRASH, "OSError")
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@needs["pid_namespace"]
def test_host_processes_are_invisible() -> None:
    result = run(
        """
        import os
        assert os.getppid() == 1  # the supervisor is the namespace's init
        assert sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == [1, os.getpid()]
        """
    )
    assert result.outcome is Outcome.PASSED, result.stderr


@needs["dropped_privileges"]
def test_privileges_are_dropped() -> None:
    result = run(
        """
        import os, resource
        assert (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) == (65534,) * 4
        assert os.getgroups() == []
        assert "NoNewPrivs:\\t1" in open("/proc/self/status").read()
        assert resource.getrlimit(resource.RLIMIT_NPROC) == (64, 64)
        assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
        """,
        SandboxLimits(),
    )
    assert result.outcome is Outcome.PASSED, result.stderr


# --- environment and cleanup -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_environment_is_minimal(mode: sandbox._Mode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    monkeypatch.setenv("CODEDYN_SECRET_TOKEN", "do-not-leak")
    result = run(
        f"""
        import os, sys, tempfile
        assert sorted(os.environ) == ["HOME", "LANG", "PATH", "TMPDIR"], sorted(os.environ)
        assert os.environ["HOME"] == os.environ["TMPDIR"] == os.getcwd()
        assert tempfile.gettempdir() == os.getcwd()
        assert sys.flags.isolated == 1 and sys.flags.dont_write_bytecode == 1
        assert __name__ == "__main__" and sys.modules["__main__"].__dict__ is globals()
        assert sys.stdin.read() == ""
        if {mode.use_namespaces!r}:  # the private tmpfs hides the sandbox's own files
            assert os.listdir(".") == [], os.listdir(".")
        open("scratch.txt", "w").write("writable")
        """,
        mode=mode,
    )
    assert result.outcome is Outcome.PASSED, result.stderr


def test_each_program_gets_a_fresh_directory() -> None:
    source = "import os\nassert not os.path.exists('state')\nopen('state', 'w').close()"
    assert [run(source).outcome for _ in range(2)] == [Outcome.PASSED] * 2


@pytest.mark.parametrize("mode", MODES)
def test_no_temporary_files_are_left(mode: sandbox._Mode, sandbox_tmpdir: Path) -> None:
    sources = [
        "open('f', 'w').write('x')",
        "1 / 0",
        "import os\nos._exit(0)",
        "while True:\n    pass",
        # A directory its owner cannot list; removal must still succeed.
        "import os\nos.makedirs('locked/inner')\nopen('locked/inner/f', 'w').close()\nos.chmod('locked', 0)",
    ]
    outcomes = [run(src, mode=mode).outcome for src in sources]
    assert outcomes == [Outcome.PASSED, Outcome.CRASH, Outcome.CRASH, Outcome.TIMEOUT, Outcome.PASSED]
    assert list(sandbox_tmpdir.iterdir()) == []


# --- API -------------------------------------------------------------------------------------------


def test_result_round_trips_through_json() -> None:
    result = run("print('ok')\nassert False")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["outcome"] == "assertion"
    assert ExecutionResult.from_dict(data) == result


def test_run_program_uses_the_selected_mode() -> None:
    result = run_program("import os\nprint(os.geteuid())", FAST)
    assert result.outcome is Outcome.PASSED
    assert (int(result.stdout) == 65534) == REPORT["dropped_privileges"]


def test_run_programs_keeps_input_order_and_reports_each_result() -> None:
    sources = [
        "import time\ntime.sleep(0.4)",
        "assert False",
        "import time\ntime.sleep(0.2)\n1 / 0",
        "print('last')",
    ]
    seen: dict[int, ExecutionResult] = {}
    results = run_programs(sources, FAST, workers=2, on_result=lambda i, r: seen.setdefault(i, r))
    assert [r.outcome for r in results] == [Outcome.PASSED, Outcome.ASSERTION, Outcome.CRASH, Outcome.PASSED]
    assert results[3].stdout == "last\n"
    assert seen == dict(enumerate(results))


def test_run_programs_runs_in_parallel() -> None:
    start = time.monotonic()
    results = run_programs(["import time\ntime.sleep(1.0)"] * 2, SandboxLimits(timeout_s=5.0), workers=2)
    assert [r.outcome for r in results] == [Outcome.PASSED] * 2
    assert time.monotonic() - start < 1.8


def test_run_programs_edge_cases() -> None:
    assert run_programs([]) == []
    with pytest.raises(ValueError):
        run_programs(["pass"], workers=0)


def test_on_result_exception_propagates() -> None:
    def fail(index: int, result: ExecutionResult) -> None:
        raise KeyError(index)

    with pytest.raises(KeyError):
        run_programs(["pass"] * 3, FAST, workers=1, on_result=fail)


def test_isolation_report_shape() -> None:
    assert set(REPORT) == {
        "network_namespace",
        "pid_namespace",
        "mount_namespace",
        "read_only_filesystem",
        "private_workdir",
        "dropped_privileges",
        "no_new_privileges",
        "rlimits",
        "process_group_kill",
    }
    assert all(isinstance(v, bool) for v in REPORT.values())
    assert REPORT["rlimits"] and REPORT["process_group_kill"]


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "true"]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and a working unshare")
def test_everything_is_active_when_the_os_allows_it() -> None:
    assert SELECTED == sandbox._Mode(use_namespaces=True, drop_privileges=True)
    assert all(REPORT.values()), REPORT


@needs["pid_namespace"]
def test_isolate_network_false_keeps_the_host_network_namespace() -> None:
    source = "import os\nprint(os.readlink('/proc/self/ns/net'))"
    shared = run(source, SandboxLimits(isolate_network=False))
    isolated = run(source)
    assert shared.stdout.strip() == os.readlink("/proc/self/ns/net") != isolated.stdout.strip()


def test_backstop_kills_a_stopped_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only possible in the plain mode, where the program may signal its supervisor: it stops it, so the
    # supervisor's own timeout never fires and the caller's backstop must kill the whole session.
    monkeypatch.setattr(sandbox, "_BACKSTOP_GRACE_S", 0.5)
    source = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nwhile True:\n    pass"
    result = run(source, FAST, mode=PLAIN)
    assert (result.outcome, result.error_type) == (Outcome.TIMEOUT, "Timeout")
    assert result.duration_s < 3.0


def test_waiting_works_without_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(pid: int) -> int:
        raise OSError("pidfd_open not supported")

    monkeypatch.setattr(sandbox.os, "pidfd_open", unavailable)  # affects the caller side only
    assert run("print('ok')").outcome is Outcome.PASSED
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert sandbox._wait_for_exit(child.pid, 0.05) is False  # the polling path honours its timeout
        child.kill()
        assert sandbox._wait_for_exit(child.pid, 5.0) is True
    finally:
        child.kill()
        child.wait()


def test_process_and_mount_helpers() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert child.pid in sandbox._child_pids()
        assert child.pid in sandbox._child_pids_by_scanning(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert sandbox._unescape_mount_field(r"/mnt/a\040b\134c") == "/mnt/a b\\c"
    assert "/" in sandbox._mount_points()


def test_signal_names() -> None:
    assert sandbox._signal_name(signal.SIGKILL) == "SIGKILL"
    assert sandbox._signal_name(200) == "SIG200"
