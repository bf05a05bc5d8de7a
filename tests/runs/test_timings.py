"""The model clock: what counts as model compute, and the loss head that the sampler and readouts share."""

import time

import pytest
import torch

from codedyn.models.token_loss import loss_head
from codedyn.runs.timings import ModelClock


class Slow(torch.nn.Module):
    """A module whose forward takes a known time (and keeps a gradient path)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        time.sleep(self.seconds)
        return x * self.weight


def test_the_clock_counts_module_forwards_and_not_the_code_around_them():
    with ModelClock() as clock:
        Slow(0.05)(torch.ones(3))
        time.sleep(0.05)  # outside any module: not model compute
    assert 0.045 <= clock.forward < 0.09
    assert clock.backward == 0.0


def test_the_clock_counts_the_backward_through_a_module_output_until_the_optimizer_steps():
    model = Slow(0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with ModelClock() as clock:
        out = model(torch.ones(3)).sum()
        out.backward()
        time.sleep(0.05)  # between the backward and the step: still inside the window the clock closes at the step
        optimizer.step()
        time.sleep(0.05)  # after the step: not counted
    assert 0.045 <= clock.backward < 0.09


@pytest.mark.parametrize("gather", [False, True])
def test_the_loss_head_is_the_next_token_cross_entropy(gather):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    ids = torch.randint(0, 7, (2, 5), generator=generator)
    expected = -torch.log_softmax(logits, dim=-1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    got = loss_head()(logits, ids, gather=gather)
    assert got.shape == (2, 4)
    torch.testing.assert_close(got, expected)


def test_the_loss_head_counts_as_model_compute_forward_and_backward():
    logits = torch.randn(64, 65, 4096, requires_grad=True)
    ids = torch.randint(0, 4096, (64, 65))
    with ModelClock() as clock:
        loss = loss_head()(logits, ids, gather=True).mean()
        loss.backward()
    with ModelClock() as outside:  # the same arithmetic as plain tensor code: invisible to the clock
        loss = (-torch.log_softmax(logits, dim=-1)[:, :-1].gather(-1, ids[:, 1:, None])).mean()
        loss.backward()
    assert clock.forward > 0 and clock.backward > 0
    assert outside.seconds == 0.0
