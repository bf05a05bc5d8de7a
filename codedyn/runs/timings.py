"""Where a run's time and memory go: wall time, model forward/backward time and peak memory per stage.

:class:`ModelClock` times every top-level module forward (any ``torch.nn.Module`` called while no other module is
running) and every backward pass through such a forward's output, until the next optimizer step or forward. It uses
torch's global module and optimizer hooks, registered on entry and always removed on exit, so it sees models that
the timed code loads and copies itself (the sampler deep-copies its model per chain).

:func:`stage` measures one stage: wall seconds, model seconds (forward + backward) and the peak resident memory of
this process during the stage (Linux: the high-water mark is reset at the start via ``/proc/self/clear_refs``;
elsewhere the process-lifetime peak is reported).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ModelClock:
    """Accumulates seconds spent in model forward passes and in backward passes while entered.

    A forward pass is any torch module's outermost forward call: the language model (with its loss head,
    :func:`codedyn.models.token_loss.loss_head`) and the SAE encoders whose latents a posterior observes
    (:meth:`codedyn.models.sae.TopKSAE.encoder`); everything else (the sampler's bookkeeping, the component norms
    computed from captured activations) is not model time."""

    def __init__(self) -> None:
        self.forward = 0.0
        self.backward = 0.0
        self._depth = 0
        self._forward_started: float | None = None
        self._backward_started: float | None = None
        self._handles: list[Any] = []
        self._sync = None

    @property
    def seconds(self) -> float:
        return self.forward + self.backward

    def __enter__(self) -> ModelClock:
        import torch
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self._handles = [
            register_module_forward_pre_hook(self._pre_forward),
            register_module_forward_hook(self._post_forward, always_call=True),
            register_optimizer_step_pre_hook(self._pre_step),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._close_backward()
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def _now(self) -> float:
        if self._sync is not None:
            self._sync()
        return time.perf_counter()

    def _pre_forward(self, module, args) -> None:
        if self._depth == 0:
            self._close_backward()
            self._forward_started = self._now()
        self._depth += 1

    def _post_forward(self, module, args, output) -> None:
        self._depth = max(self._depth - 1, 0)
        if self._depth or self._forward_started is None:
            return
        self.forward += self._now() - self._forward_started
        self._forward_started = None
        tensor = _first_grad_tensor(output)
        if tensor is not None:
            tensor.register_hook(self._gradient_arrived)

    def _gradient_arrived(self, grad) -> None:
        if self._backward_started is None:
            self._backward_started = self._now()

    def _pre_step(self, optimizer, args, kwargs) -> None:
        self._close_backward()

    def _close_backward(self) -> None:
        if self._backward_started is not None:
            self.backward += self._now() - self._backward_started
            self._backward_started = None


def _first_grad_tensor(output):
    """The first tensor in a module's output (tensor, tuple, dict or ModelOutput) that autograd will reach."""
    import torch

    if isinstance(output, torch.Tensor):
        return output if output.requires_grad else None
    values = output.values() if isinstance(output, dict) else output if isinstance(output, list | tuple) else ()
    for value in values:
        found = _first_grad_tensor(value)
        if found is not None:
            return found
    return None


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark in MB (since the last reset, where the OS allows one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


@contextmanager
def stage(name: str, record: list[dict[str, Any]], **extra: Any) -> Iterator[dict[str, Any]]:
    """Time one stage and append ``{"stage", "seconds", "cpu_seconds", "model_seconds", "forward_seconds",
    "backward_seconds", "peak_rss_mb", **extra}`` to ``record`` (also when the stage raises: a partial run still
    says where it was). ``cpu_seconds`` is this process's CPU time over all its threads (on a busy machine wall
    time is inflated, CPU time much less so); ``peak_rss_mb`` is the process's resident peak during the stage
    (memory it already held counts)."""
    entry: dict[str, Any] = {"stage": name, **extra}
    _reset_peak_rss()
    cuda = _cuda_in_use()
    if cuda:
        cuda.reset_peak_memory_stats()
    started, cpu_started = time.perf_counter(), time.process_time()
    clock = ModelClock()
    try:
        with clock:
            yield entry
    finally:
        entry.update({
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            "model_seconds": clock.seconds,
            "forward_seconds": clock.forward,
            "backward_seconds": clock.backward,
            "peak_rss_mb": peak_rss_mb(),
        })
        if cuda or _cuda_in_use():  # the device's allocator peak, where a stage used a GPU
            entry["peak_gpu_mb"] = (cuda or _cuda_in_use()).max_memory_allocated() / 2**20
        record.append(entry)


def _cuda_in_use():
    """torch.cuda when this process has initialised CUDA (never initialises it, never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def summary(stages: list[dict[str, Any]], total_seconds: float) -> dict[str, Any]:
    """Totals over stages: wall seconds, model seconds and their ratio, the largest per-stage memory peak."""
    model = sum(s.get("model_seconds", 0.0) for s in stages)
    return {
        "total_seconds": total_seconds,
        "cpu_seconds": sum(s.get("cpu_seconds", 0.0) for s in stages),
        "model_seconds": model,
        "model_fraction": model / total_seconds if total_seconds > 0 else float("nan"),
        "peak_rss_mb": max((s.get("peak_rss_mb", 0.0) for s in stages), default=0.0),
    }


def load_average() -> list[float] | None:
    """The 1 / 5 / 15-minute load averages (timings measured on a busy machine are inflated)."""
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
