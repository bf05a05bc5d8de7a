"""Run untrusted Python programs and classify each as passed / assertion / crash / timeout.

Threat model
============
The dataset builder executes code nobody reviewed: HumanEval solutions, mutated variants of them, and
generations sampled from language models. None of it is expected to be *malicious*, but all of it must be
expected to be *broken* in every way a program can be: infinite loops, runaway recursion or allocation,
fork loops, gigabytes of output or of files, ``sys.exit()`` / ``os._exit()`` in the middle of the tests,
stray ``os.kill`` / ``os.killpg`` calls, daemonised background processes that outlive their parent, socket
calls that would block on the network. One such program must not hang the build, fill the disk or the
memory, kill the builder, leave processes or temporary files behind, or be recorded with the wrong label.

Out of scope: a program written to attack *this grader*. The program runs in the process that reports its
result, so code that digs through the runner's frames could forge a pass. Model samples do not do that;
every containment measure below works without trusting the program at all.

Layers, and the failure each one exists for
===========================================
* **Fresh interpreter per program** (``sys.executable -I -B``): no state leaks between programs; ``-I``
  ignores ``PYTHON*`` variables and the user site, ``-B`` keeps the sandbox from writing ``.pyc`` files.
* **Private working directory** (also ``HOME`` and ``TMPDIR``), minimal environment, stdin from
  ``/dev/null`` (``input()`` gets EOF instead of waiting forever). The parent removes the directory in a
  ``finally``, whatever happened.
* **Supervisor.** The interpreter started by the parent runs *this file* as a script (``__main__`` below).
  It forks the program, enforces the wall-clock limit itself, and becomes a child subreaper, so processes
  that daemonise (double fork + ``setsid``) are re-parented to it and killed when the program ends.
* **Result protocol** (why a label cannot be spoofed by printing or by exiting early): the runner ``exec``s
  the program text in a fresh ``__main__`` module and, only after it returned, appends
  ``<nonce> child passed`` to a result file whose descriptor the parent opened; an ``AssertionError``
  or any other exception writes its own line and exits with its own code. The supervisor appends the
  program's wait status. The parent accepts the child's line only if the exit status agrees with it, so
  ``sys.exit(0)``, ``os._exit(0)`` or a program that dies mid-test (no line) is a CRASH, text printed to
  stdout is never parsed, and processes the program forks never report (the runner checks its pid).
* **Resource limits** on the program: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (also
  bounds stdout / stderr, which go to files; the parent reads only their head / tail), ``RLIMIT_CORE=0``
  and, once privileges are dropped, ``RLIMIT_NPROC`` (fork loops).
* **Backstop**: the parent starts everything in a new session and kills the whole process group if the
  supervisor itself overruns, so the caller never waits more than ``timeout_s`` plus a grace period.

When running as root and ``unshare`` works (probed once, see :func:`isolation_report`):

* **PID namespace**: the supervisor is its init, so when it exits the kernel kills every process inside;
  the program cannot see or signal anything outside (``os.getppid()`` is the supervisor).
* **Network namespace**: only a downed loopback, so network calls fail at once instead of hanging.
* **Mount namespace**: every mount is remounted read-only; the working directory and ``/dev/shm`` become
  small private tmpfs mounts (total writes bounded by ``file_size_mb``; they vanish with the namespace),
  so many small files cannot fill the disk either.
* **Dropped privileges** (uid/gid 65534 and ``no_new_privs``): the program cannot signal the root-owned
  supervisor or other root processes, cannot undo the mounts, and ``RLIMIT_NPROC`` applies. Directories
  on the interpreter's paths that uid 65534 could not traverse (e.g. ``/root`` holding a pyenv Python) are
  replaced, inside the namespace only, by a tmpfs exposing just the needed subdirectory.

Without root (or without ``unshare``) the sandbox degrades to process group + subreaper + rlimits:
timeouts, crashes and daemonised descendants are still handled, but the program shares the network,
the filesystem and the user of the caller, and a fork loop is bounded only by the timeout.
"""

from __future__ import annotations

import builtins
import marshal
import os
import select
import signal
import sys
import time
import types

# ---------------------------------------------------------------------------------------------------------
# Part 1 -- the supervisor. This file runs as ``__main__`` inside the sandbox (see ``_BOOTSTRAP``) and stops
# at the ``__main__`` guard below. It may only use modules that are cheap to import: every millisecond here
# is paid once per program. (That is also why the job is ``marshal``-ed instead of JSON: it is built in.)
# ---------------------------------------------------------------------------------------------------------

_NOBODY = 65534  # uid and gid the program runs as when the caller is root
_PROGRAM_FILENAME = "program.py"  # name shown in the program's tracebacks

# Exit codes of the forked runner; the parent cross-checks them against the result line.
_EXIT_PASSED = 0
_EXIT_ASSERTION = 3
_EXIT_ERROR = 4
_EXIT_SETUP_FAILED = 70
_EXIT_TIMEOUT = 124

# Linux constants not exposed by the os module.
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_BIND = 4096
_MS_REC = 16384
_MS_RELATIME = 1 << 21


class _Libc:
    """The two libc calls the stdlib lacks: ``prctl`` and ``mount``."""

    def __init__(self) -> None:
        import ctypes  # only the supervisor needs it

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self._libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4

    def prctl(self, option: int, value: int) -> bool:
        return self._libc.prctl(option, value, 0, 0, 0) == 0

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> bool:
        def enc(text: str | None) -> bytes | None:
            return None if text is None else os.fsencode(text)

        return self._libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) == 0


def _supervisor_main(argv: list[str]) -> int:
    """Entry point inside the sandbox: set up, fork the program, wait, clean up, report."""
    job_path = os.path.abspath(argv[0])
    with open(job_path, "rb") as fh:
        job = marshal.load(fh)
    os.unlink(job_path)  # the program must not find the nonce on disk
    deadline = time.monotonic() + job["timeout_s"]
    libc = _Libc()
    # Orphans (daemonised grandchildren) are re-parented to us rather than to the host's init, so
    # _kill_descendants can find them. (As init of a PID namespace we are their reaper anyway.)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if job["drop_privileges"]:
        os.chown(job["workdir"], _NOBODY, _NOBODY)  # before any read-only remount
    if job["private_mounts"]:
        _harden_filesystem(libc, job)

    pid = os.fork()
    if pid == 0:
        try:
            _child_main(libc, job)  # never returns ...
        finally:
            os._exit(_EXIT_SETUP_FAILED)  # ... and if it did, it must not run the supervisor's code below
    status = _wait_for_program(pid, deadline)
    if os.getpid() != 1:
        # Without a PID namespace nobody else will kill what the program left behind. (As a namespace's
        # init, our exit makes the kernel kill everything inside.)
        _kill_descendants(time.monotonic() + 5.0)
    if status is None:
        _report(job, "supervisor", "timeout", "-")
        return _EXIT_TIMEOUT
    if os.WIFSIGNALED(status):
        _report(job, "supervisor", "signaled", str(os.WTERMSIG(status)))
        return 128 + os.WTERMSIG(status)
    _report(job, "supervisor", "exited", str(os.WEXITSTATUS(status)))
    return os.WEXITSTATUS(status)


def _report(job: dict, who: str, kind: str, detail: str) -> None:
    """Append one ``<nonce> <who> <kind> <detail>`` line to the result file (one write, so it is atomic)."""
    detail = "_".join(detail.split()) or "-"
    try:
        os.write(job["result_fd"], f"{job['nonce']} {who} {kind} {detail}\n".encode())
    except OSError:
        pass  # the program closed or broke the descriptor: the parent will see no line and say CRASH


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Block until process ``pid`` (our child) has exited, without reaping it. False on timeout."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)  # exact wake-up on exit, no polling (Linux >= 5.3)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while (remaining := deadline - time.monotonic()) > 0:
                if poller.poll(max(1, int(remaining * 1000))):
                    return True
            return False
        finally:
            os.close(pidfd)
    while time.monotonic() < deadline:  # fallback: poll with waitid(WNOWAIT), which does not reap
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.005)
    return False


def _wait_for_program(pid: int, deadline: float) -> int | None:
    """Wait status of the program, or None if it hit the wall-clock limit (it is killed then)."""
    if _wait_for_exit(pid, deadline - time.monotonic()):
        return os.waitpid(pid, 0)[1]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _child_pids() -> list[int]:
    """Direct children of this process, zombies included."""
    me = os.getpid()
    try:
        pids: list[int] = []
        for tid in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{tid}/children") as fh:
                pids.extend(int(p) for p in fh.read().split())
        return pids
    except FileNotFoundError:  # kernel without CONFIG_PROC_CHILDREN
        return _child_pids_by_scanning(me)


def _child_pids_by_scanning(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # "pid (comm) state ppid ...": comm may contain spaces and ")", so split after the last one.
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if ppid == parent:
            pids.append(int(entry))
    return pids


def _kill_descendants(deadline: float) -> None:
    """SIGKILL and reap every descendant. Killing our children re-parents theirs to us (we are a
    subreaper), so repeating until we have no children reaches the whole tree, setsid'd daemons included."""
    while time.monotonic() < deadline:
        children = _child_pids()
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:  # reap whatever has died; the rest is picked up in the next round
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        time.sleep(0.001)


# --- filesystem hardening (inside the private mount namespace, as root) ------------------------------


def _harden_filesystem(libc: _Libc, job: dict) -> None:
    """Make the host filesystem read-only and give the program small private tmpfs mounts to write to."""
    workdir = job["workdir"]
    if job["drop_privileges"]:
        _make_traversable_for_nobody(libc, _paths_the_program_needs(workdir))
    _remount_all_read_only(libc)
    size = f"size={job['file_size_mb']}m"
    owner = f",uid={_NOBODY},gid={_NOBODY}" if job["drop_privileges"] else ""
    libc.mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},nr_inodes=4096,mode=0700{owner}")
    if os.path.isdir("/dev/shm"):  # multiprocessing's semaphores live here
        libc.mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},nr_inodes=1024,mode=1777")
    os.chdir(workdir)  # our cwd still points at the directory underneath the new tmpfs


def _paths_the_program_needs(workdir: str) -> set[str]:
    """Directories uid 65534 must be able to reach: the interpreter's, and the one holding the workdir
    (``TMPDIR`` and ``HOME`` are absolute paths into it)."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
    candidates += [os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(workdir)]
    return {os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}


def _nobody_can_enter(path: str) -> bool:
    st = os.stat(path)
    if st.st_uid == _NOBODY:
        return bool(st.st_mode & 0o100)
    if st.st_gid == _NOBODY:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _first_blocked_ancestor(path: str) -> tuple[str, str] | None:
    """(directory uid 65534 cannot enter, name of its child on the way to ``path``), or None."""
    current = "/"
    for name in path.strip("/").split("/"):
        if not name:
            continue
        if not _nobody_can_enter(current):
            return current, name
        current = os.path.join(current, name)
    return None


def _make_traversable_for_nobody(libc: _Libc, paths: set[str]) -> None:
    """Cover each blocking directory with a world-enterable tmpfs into which only the needed children
    are bind-mounted back. Repeats because a re-exposed child can itself be non-enterable."""
    grafted: set[str] = set()
    for _ in range(32):
        blocked: dict[str, set[str]] = {}
        for path in paths:
            hit = _first_blocked_ancestor(path)
            if hit is not None and hit[0] not in grafted:
                blocked.setdefault(hit[0], set()).add(hit[1])
        if not blocked:
            return
        for directory, children in blocked.items():
            grafted.add(directory)
            _graft(libc, directory, children)


def _graft(libc: _Libc, directory: str, children: set[str]) -> None:
    # O_PATH handles keep the children reachable after the tmpfs hides them; bind-mounting from
    # /proc/self/fd/N then puts them back.
    handles = {name: os.open(os.path.join(directory, name), os.O_PATH | os.O_DIRECTORY) for name in children}
    try:
        if not libc.mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755"):
            return
        for name, fd in handles.items():
            target = os.path.join(directory, name)
            os.mkdir(target, 0o755)
            libc.mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC, None)
    finally:
        for fd in handles.values():
            os.close(fd)


def _mount_points() -> list[str]:
    points: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = _unescape_mount_field(line.split()[4])  # field 5 is the mount point
            if point not in points:
                points.append(point)
    return points


def _unescape_mount_field(raw: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    import re  # only the namespace set-up needs it

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw)


def _remount_all_read_only(libc: _Libc) -> None:
    """Per-mount read-only flag in our private namespace; the host's mounts are untouched. Existing
    nosuid/nodev/noexec/atime flags are carried over so that nothing is loosened on the way."""
    keep = {
        os.ST_NOSUID: _MS_NOSUID,
        os.ST_NODEV: _MS_NODEV,
        os.ST_NOEXEC: _MS_NOEXEC,
        os.ST_NOATIME: _MS_NOATIME,
        os.ST_NODIRATIME: _MS_NODIRATIME,
        os.ST_RELATIME: _MS_RELATIME,
    }
    for point in _mount_points():
        try:
            flags = os.statvfs(point).f_flag
        except OSError:
            continue
        if flags & os.ST_RDONLY:
            continue
        extra = sum(ms for st, ms in keep.items() if flags & st)
        libc.mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | extra, None)


# --- the forked program process ---------------------------------------------------------------------


def _child_main(libc: _Libc, job: dict) -> None:
    """Runs in the forked child: limit, drop privileges, run the program. Never returns."""
    try:
        _apply_rlimits(job)
        if job["drop_privileges"]:
            os.setgroups([])
            os.setgid(_NOBODY)
            os.setuid(_NOBODY)  # as root this sets real, effective and saved ids: no way back
            if os.getuid() != _NOBODY or os.geteuid() != _NOBODY:
                raise PermissionError("privileges were not dropped")
            if not libc.prctl(_PR_SET_NO_NEW_PRIVS, 1):  # setuid binaries cannot hand root back
                raise PermissionError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    except BaseException as exc:
        os.write(2, f"codedyn sandbox: setup failed: {exc!r}\n".encode(errors="replace"))
        _report(job, "child", "setup-failed", type(exc).__name__)
        os._exit(_EXIT_SETUP_FAILED)
    _exec_program(job)


def _apply_rlimits(job: dict) -> None:
    import resource  # cheap, and only the child needs it

    mb = 1024 * 1024
    limits = [
        (resource.RLIMIT_AS, job["memory_mb"] * mb, job["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, job["file_size_mb"] * mb, job["file_size_mb"] * mb),
        (resource.RLIMIT_CORE, 0, 0),
        # SIGXCPU at the soft limit kills the program; SIGKILL one second later catches one that traps it.
        (resource.RLIMIT_CPU, job["cpu_s"], job["cpu_s"] + 1),
    ]
    if job["drop_privileges"]:
        # Counted per real uid, so it only bites once we are uid 65534 (root is exempt anyway).
        limits.append((resource.RLIMIT_NPROC, job["max_processes"], job["max_processes"]))
    for which, soft, hard in limits:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:  # unprivileged: a hard limit can only go down
            hard = min(hard, current_hard)
        resource.setrlimit(which, (min(soft, hard), hard))


def _exec_program(job: dict) -> None:
    """Run the program text as ``__main__``; report how it ended, but only from this very process."""
    runner_pid = os.getpid()
    source = job["source"]
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    sys.argv = [_PROGRAM_FILENAME]
    failure: BaseException | None = None
    try:
        # dont_inherit: the program must not pick up this file's ``from __future__`` flags.
        exec(compile(source, _PROGRAM_FILENAME, "exec", dont_inherit=True), main.__dict__)
        _flush_std_streams()  # a failing flush (e.g. output over RLIMIT_FSIZE) is a failure too
    except BaseException as exc:  # SystemExit included: exiting before the end of the tests is no pass
        failure = exc
        try:
            _flush_std_streams()  # keep what the program printed before it failed
        except BaseException:
            pass
    if os.getpid() != runner_pid:
        # A process the program forked returned into this frame. It must never report for the program.
        os._exit(0 if failure is None else 1)
    if failure is None:
        _report(job, "child", "passed", "-")
        os._exit(_EXIT_PASSED)
    _print_traceback(failure, source)
    if isinstance(failure, AssertionError):
        _report(job, "child", "assertion", type(failure).__name__)
        os._exit(_EXIT_ASSERTION)
    _report(job, "child", "error", type(failure).__name__)
    os._exit(_EXIT_ERROR)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def _print_traceback(exc: BaseException, source: str) -> None:
    try:
        import linecache
        import traceback
    except BaseException:  # the stdlib may be unreadable after dropping privileges (fallback mode)
        _write_stderr(f"{type(exc).__name__}\n")
        return
    try:
        # The program file never exists on disk; give linecache the text so tracebacks show source lines.
        linecache.cache[_PROGRAM_FILENAME] = (len(source), None, source.splitlines(True), _PROGRAM_FILENAME)
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # hide the runner's frame
        _write_stderr("".join(traceback.format_exception(type(exc), exc, tb)))
    except BaseException:  # e.g. an exception whose __str__ raises
        _write_stderr(f"{type(exc).__name__}\n")


def _write_stderr(text: str) -> None:
    # Straight to fd 2: the program may have replaced or closed sys.stderr.
    try:
        os.write(2, text.encode("utf-8", errors="replace"))
    except OSError:
        pass  # over RLIMIT_FSIZE, or closed


if __name__ == "__main__":
    # We are the supervisor inside the sandbox. Stop before Part 2: its imports (dataclasses alone costs
    # ~15 ms) would be paid by every program and are not needed here.
    sys.exit(_supervisor_main(sys.argv[1:]))


# ---------------------------------------------------------------------------------------------------------
# Part 2 -- the public API, used by the caller. (Imports sit here, not at the top, so that the supervisor
# never pays for them; see the ``__main__`` guard above.)
# ---------------------------------------------------------------------------------------------------------

import dataclasses  # noqa: E402
import enum  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor, as_completed  # noqa: E402
from typing import BinaryIO  # noqa: E402

from codedyn.config import SandboxConfig  # noqa: E402  (the one source of the limits' defaults)

_CONFIGURED = SandboxConfig()

_SUPERVISOR_SCRIPT = os.path.abspath(__file__)
# The supervisor is this file run as ``__main__``. Running it by path would recompile it in every sandbox
# (scripts get no .pyc; ~10 ms per program), so the caller compiles it once and each sandbox starts from
# the marshalled code object. marshal is safe here: both sides are the same interpreter, sys.executable.
_BOOTSTRAP = """\
import marshal, sys
with open(sys.argv[1], "rb") as fh:
    code = marshal.load(fh)
sys.argv = sys.argv[1:]
exec(code, {"__name__": "__main__", "__file__": code.co_filename, "__builtins__": __builtins__})
"""
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Extra wall-clock time the parent grants the supervisor (interpreter start-up, cleanup) before it
# kills the whole session itself.
_BACKSTOP_GRACE_S = 5.0
_RESULT_FILE = ".codedyn-result"


class Outcome(enum.StrEnum):  # a str subclass: compares and serialises as its value
    PASSED = "passed"  # exit 0
    ASSERTION = "assertion"  # an AssertionError escaped (the test failed)
    CRASH = "crash"  # any other exception, SystemExit included, an early exit, or killed by a signal/rlimit
    TIMEOUT = "timeout"  # wall-clock timeout hit; whole process tree killed


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    # The four limits a dataset config can set default to ``dataset.sandbox``'s defaults (SandboxConfig), so a
    # program run directly and one run for a dataset get the same limits.
    timeout_s: float = _CONFIGURED.timeout_s  # wall clock
    cpu_s: int = _CONFIGURED.cpu_s  # RLIMIT_CPU
    memory_mb: int = _CONFIGURED.memory_mb  # RLIMIT_AS
    file_size_mb: int = _CONFIGURED.file_size_mb  # RLIMIT_FSIZE; with namespaces also the size of the private
    # tmpfs mounts
    # RLIMIT_NPROC, effective when privileges are dropped. The kernel counts every uid-65534 process on the
    # machine (threads included), so concurrent sandboxes share the budget.
    max_processes: int = 64
    max_output_bytes: int = 65536  # stdout (head) / stderr (tail) each truncated to this
    isolate_network: bool = True  # use a new network namespace when the OS allows


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """How one program ended.

    ``error_type`` is the exception's class name when one escaped (``"AssertionError"``,
    ``"ZeroDivisionError"``, ``"SystemExit"``, ``"MemoryError"``, ``"OSError"`` for output or files over
    the limits ...), the signal's name when the program was killed (``"SIGXCPU"`` for the CPU limit,
    ``"SIGKILL"``, ...), ``"EarlyExit"`` when it exited without finishing (``os._exit``), ``"Timeout"``,
    ``"SupervisorKilled"`` / ``"SandboxError"`` when the sandbox itself failed or was killed (fallback mode
    only), and ``""`` for PASSED.
    """

    outcome: Outcome
    returncode: int | None  # the program's exit code, -N for signal N, None on timeout
    duration_s: float  # wall clock seen by the caller, interpreter start-up included
    error_type: str
    stdout: str  # the first max_output_bytes, decoded as UTF-8 with replacement
    stderr: str  # the last max_output_bytes (the end of the traceback), decoded likewise

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["outcome"] = self.outcome.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExecutionResult:
        return cls(
            outcome=Outcome(d["outcome"]),
            returncode=d["returncode"],
            duration_s=float(d["duration_s"]),
            error_type=d["error_type"],
            stdout=d["stdout"],
            stderr=d["stderr"],
        )


_DEFAULT_LIMITS = SandboxLimits()


def run_program(source: str, limits: SandboxLimits = _DEFAULT_LIMITS) -> ExecutionResult:
    """Run one complete program (prompt + solution + tests + ``check(entry_point)``) in the sandbox."""
    return _run_program(source, limits, _selected_mode())


def run_programs(
    sources: Sequence[str],
    limits: SandboxLimits = _DEFAULT_LIMITS,
    workers: int = 2,
    on_result: Callable[[int, ExecutionResult], None] | None = None,
) -> list[ExecutionResult]:
    """Run many programs concurrently; results in input order.

    ``on_result(index, result)`` is called in the calling thread as each program finishes (progress bars,
    resumable caches). If it raises, programs not yet started are cancelled and the exception propagates.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not sources:
        return []
    mode = _selected_mode()  # probe once here, not concurrently in every worker
    results: list[ExecutionResult | None] = [None] * len(sources)
    pool = ThreadPoolExecutor(max_workers=min(workers, len(sources)), thread_name_prefix="codedyn-sandbox")
    try:
        futures = {pool.submit(_run_program, src, limits, mode): i for i, src in enumerate(sources)}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            if on_result is not None:
                on_result(index, results[index])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]  # every slot was filled above


def isolation_report() -> dict[str, bool]:
    """Which protections are active on this machine, as observed by a probe program inside the sandbox."""
    _selected_mode()
    assert _STATE is not None
    return dict(_STATE.report)


# --- mode selection ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Mode:
    use_namespaces: bool  # unshare --pid --fork --mount-proc [--net]; private read-only mounts
    drop_privileges: bool  # run the program as uid/gid 65534


@dataclasses.dataclass(frozen=True)
class _State:
    mode: _Mode
    report: dict[str, bool]


_STATE: _State | None = None
_STATE_LOCK = threading.Lock()

# Exercises what real programs need (lazily imported stdlib modules, a writable cwd and TMPDIR) and prints
# what the isolation looks like from the inside.
_PROBE_SOURCE = """
import decimal, fractions, json, os, resource, statistics, tempfile
with tempfile.TemporaryFile() as fh:
    fh.write(b"probe")
with open("probe.txt", "w") as fh:
    fh.write("probe")
with open("/proc/self/status") as fh:
    status = fh.read()
print(json.dumps({
    "euid": os.geteuid(),
    "ns": {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("net", "pid", "mnt")},
    "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
    "workdir_is_mount": os.path.ismount(os.getcwd()),
    "no_new_privs": "NoNewPrivs:\\t1" in status,
    "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
}))
"""


def _candidate_modes() -> list[_Mode]:
    """Strongest first. Creating namespaces without a user namespace needs root."""
    root = os.geteuid() == 0
    have_unshare = shutil.which("unshare") is not None
    modes = []
    if root and have_unshare:
        modes.append(_Mode(use_namespaces=True, drop_privileges=True))
    if root:
        modes.append(_Mode(use_namespaces=False, drop_privileges=True))
        if have_unshare:
            modes.append(_Mode(use_namespaces=True, drop_privileges=False))
    modes.append(_Mode(use_namespaces=False, drop_privileges=False))
    return modes


def _selected_mode() -> _Mode:
    global _STATE
    with _STATE_LOCK:
        if _STATE is None:
            _STATE = _probe()
        return _STATE.mode


def _probe() -> _State:
    """Pick the strongest mode in which the probe program passes, and record what it observed."""
    limits = SandboxLimits(timeout_s=30.0)
    failures = []
    for mode in _candidate_modes():
        result = _run_program(_PROBE_SOURCE, limits, mode)
        if result.outcome is Outcome.PASSED:
            return _State(mode, _report_from_probe(json.loads(result.stdout), limits))
        failures.append(f"{mode}: {result.outcome.value} {result.error_type}\n{result.stderr}")
    raise RuntimeError("codedyn sandbox cannot run programs on this machine:\n" + "\n".join(failures))


def _report_from_probe(facts: dict, limits: SandboxLimits) -> dict[str, bool]:
    def own_ns(kind: str) -> str:
        return os.readlink(f"/proc/self/ns/{kind}")

    return {
        "network_namespace": facts["ns"]["net"] != own_ns("net"),
        "pid_namespace": facts["ns"]["pid"] != own_ns("pid"),
        "mount_namespace": facts["ns"]["mnt"] != own_ns("mnt"),
        "read_only_filesystem": facts["root_read_only"],
        "private_workdir": facts["workdir_is_mount"],
        "dropped_privileges": facts["euid"] == _NOBODY and os.geteuid() != _NOBODY,
        "no_new_privileges": facts["no_new_privs"],
        "rlimits": facts["rlimit_as"] == limits.memory_mb * 1024 * 1024,
        "process_group_kill": True,  # start_new_session + killpg need nothing special
    }


# --- running one program -----------------------------------------------------------------------------


def _run_program(source: str, limits: SandboxLimits, mode: _Mode) -> ExecutionResult:
    workdir = tempfile.mkdtemp(prefix="codedyn-sandbox-")
    try:
        return _run_in(workdir, source, limits, mode)
    finally:
        _remove_tree(workdir)


def _run_in(workdir: str, source: str, limits: SandboxLimits, mode: _Mode) -> ExecutionResult:
    job_path = os.path.join(workdir, "job")
    code_path = os.path.join(workdir, "supervisor.marshal")
    nonce = secrets.token_hex(16)
    start = time.monotonic()
    # The parent keeps its own handles on the three output files and reads through them afterwards, so a
    # program that renames or replaces them by path changes nothing.
    with (
        open(os.path.join(workdir, _RESULT_FILE), "a+b") as result_file,  # O_APPEND: lines never overlap
        open(os.path.join(workdir, "stdout"), "w+b") as stdout,
        open(os.path.join(workdir, "stderr"), "w+b") as stderr,
    ):
        with open(code_path, "wb") as fh:
            fh.write(_supervisor_code())
        _write_job(job_path, _job(source, limits, mode, workdir, nonce, result_file.fileno()))
        proc = subprocess.Popen(
            _command(mode, limits, code_path, job_path),
            cwd=workdir,
            env=_environment(workdir),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(result_file.fileno(),),
            start_new_session=True,  # the program's process group is not ours: killpg cannot reach us
        )
        try:
            exited = _wait_for_exit(proc.pid, limits.timeout_s + _BACKSTOP_GRACE_S)
        finally:
            # Kill stragglers in the session (everything, if the supervisor overran or we were interrupted).
            # Done before reaping: the unreaped leader pins the group id, so it cannot have been recycled.
            _kill_group(proc.pid)
            proc.wait()
        duration = time.monotonic() - start
        outcome, returncode, error_type = _classify(
            _read_head(result_file, 65536), nonce, proc.returncode, backstop_fired=not exited
        )
        return ExecutionResult(
            outcome=outcome,
            returncode=returncode,
            duration_s=duration,
            error_type=error_type,
            stdout=_read_head(stdout, limits.max_output_bytes),
            stderr=_read_tail(stderr, limits.max_output_bytes),
        )


def _job(source: str, limits: SandboxLimits, mode: _Mode, workdir: str, nonce: str, result_fd: int) -> dict:
    return {
        "source": source,
        "nonce": nonce,
        "result_fd": result_fd,
        "workdir": workdir,
        "timeout_s": float(limits.timeout_s),
        "cpu_s": int(limits.cpu_s),
        "memory_mb": int(limits.memory_mb),
        "file_size_mb": int(limits.file_size_mb),
        "max_processes": int(limits.max_processes),
        "drop_privileges": mode.drop_privileges,
        "private_mounts": mode.use_namespaces,
    }


def _write_job(path: str, job: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        marshal.dump(job, fh)


def _command(mode: _Mode, limits: SandboxLimits, code_path: str, job_path: str) -> list[str]:
    prefix: list[str] = []
    if mode.use_namespaces:
        unshare = shutil.which("unshare") or "unshare"
        prefix = [unshare, "--pid", "--fork", "--mount-proc"] + (["--net"] if limits.isolate_network else [])
    return [*prefix, sys.executable, "-I", "-B", "-c", _BOOTSTRAP, code_path, job_path]


@functools.cache
def _supervisor_code() -> bytes:
    """This file, compiled once per caller process and marshalled (see ``_BOOTSTRAP``)."""
    with open(_SUPERVISOR_SCRIPT, "rb") as fh:
        return marshal.dumps(compile(fh.read(), _SUPERVISOR_SCRIPT, "exec", dont_inherit=True))


def _environment(workdir: str) -> dict[str, str]:
    # Nothing of the caller's environment leaks in (API keys, PYTHONPATH, proxies ...).
    return {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(
    result_text: str, nonce: str, process_returncode: int | None, backstop_fired: bool
) -> tuple[Outcome, int | None, str]:
    """(outcome, returncode, error_type) from the result lines. Lines without this run's nonce are
    ignored; the child's line counts only if the program's exit status agrees with it."""
    if backstop_fired:
        return Outcome.TIMEOUT, None, "Timeout"
    lines: dict[str, tuple[str, str]] = {}
    for line in result_text.splitlines():
        parts = line.split(" ")
        if len(parts) == 4 and parts[0] == nonce:
            lines.setdefault(parts[1], (parts[2], parts[3]))  # the first line of each kind counts
    if "supervisor" not in lines:  # the supervisor died (killed by the program in fallback mode) or never ran
        killed = process_returncode is not None and process_returncode < 0
        return Outcome.CRASH, process_returncode, "SupervisorKilled" if killed else "SandboxError"
    kind, detail = lines["supervisor"]
    if kind == "timeout":
        return Outcome.TIMEOUT, None, "Timeout"
    returncode = -int(detail) if kind == "signaled" else int(detail)
    expected = {
        "passed": (_EXIT_PASSED, Outcome.PASSED),
        "assertion": (_EXIT_ASSERTION, Outcome.ASSERTION),
        "error": (_EXIT_ERROR, Outcome.CRASH),
    }
    child_kind, child_detail = lines.get("child", ("", ""))
    if child_kind in expected and expected[child_kind][0] == returncode:
        outcome = expected[child_kind][1]
        return outcome, returncode, "" if outcome is Outcome.PASSED else child_detail
    if child_kind == "setup-failed":
        return Outcome.CRASH, returncode, "SandboxError"
    if returncode < 0:
        return Outcome.CRASH, returncode, _signal_name(-returncode)
    return Outcome.CRASH, returncode, "EarlyExit"  # exited without finishing: sys/os exit, exec, ...


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def _read_head(fh: BinaryIO, limit: int) -> str:
    fh.seek(0)
    return fh.read(limit).decode("utf-8", errors="replace")


def _read_tail(fh: BinaryIO, limit: int) -> str:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - limit))
    return fh.read(limit).decode("utf-8", errors="replace")


def _remove_tree(path: str) -> None:
    """Delete the working directory even if the program left unreadable directories in it."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)
