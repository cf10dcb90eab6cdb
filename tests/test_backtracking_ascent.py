"""The one line search of the refinements, on concave quadratics whose accepted rates are known
in closed form."""

import pytest
import torch

from pyromem.infer.refinement import backtracking_ascent

# f_i(theta) = -a_i ||theta - c_i||^2: the step theta + eta g, g = -2 a_i (theta - c_i), scales
# theta - c_i by 1 - 2 a_i eta, so it ascends iff eta <= 1 / a_i. With lr = 1 and 3 halvings
# the rates tried are 1, 1/2, 1/4, 1/8:
CURVATURES = [0.5, 3.0, 1.5, 10.0, 1000.0]
ACCEPTED = [1.0, 0.25, 0.5, None, None]  # the first rate <= 1 / a_i; None: no ascent
# the datapoints still searching at each try
SEARCHING = [[0, 1, 2, 3, 4], [1, 2, 3, 4], [1, 3, 4], [3, 4]]


def quadratics(device):
    g = torch.Generator().manual_seed(0)
    curvature = torch.tensor(CURVATURES, dtype=torch.float64, device=device)
    centre = torch.randn(5, 2, generator=g, dtype=torch.float64).to(device)
    theta = torch.randn(5, 2, generator=g, dtype=torch.float64).to(device)
    return curvature, centre, theta


@pytest.mark.parametrize("takes_rows", [False, True])
def test_each_datapoint_takes_the_first_rate_that_ascends(device, takes_rows):
    curvature, centre, theta = quadratics(device)
    theta = theta.requires_grad_()
    grad = -2 * curvature[:, None] * (theta - centre)  # in the graph of theta
    calls = []

    def objective(*args):
        assert not torch.is_grad_enabled() and not any(a.requires_grad for a in args)
        rows, (point,) = (args[0], args[1:]) if takes_rows else (slice(None), args)
        calls.append(args[0].tolist() if takes_rows else None)
        return -curvature[rows] * (point - centre[rows]).pow(2).sum(-1)

    value = -curvature * (theta.detach() - centre).pow(2).sum(-1)
    (new,) = backtracking_ascent(objective, (theta,), (grad,), value, 1.0, 3, takes_rows)

    rates = torch.tensor([r or 0.0 for r in ACCEPTED], dtype=torch.float64, device=device)
    torch.testing.assert_close(new, theta + rates[:, None] * grad, rtol=0, atol=0)
    assert calls == (SEARCHING if takes_rows else [None] * 4)
    # d new / d theta = 1 + eta d grad / d theta = 1 - 2 a eta per coordinate (0 steps: 1)
    (d_theta,) = torch.autograd.grad(new.sum(), theta)
    expected = (1 - 2 * curvature * rates)[:, None].expand(5, 2)
    torch.testing.assert_close(d_theta, expected)


def test_no_halving_takes_the_full_step_or_none():
    curvature, centre, theta = quadratics(torch.device("cpu"))
    grad = -2 * curvature[:, None] * (theta - centre)

    def objective(rows, point):
        return -curvature[rows] * (point - centre[rows]).pow(2).sum(-1)

    value = objective(torch.arange(5), theta)
    (new,) = backtracking_ascent(objective, (theta,), (grad,), value, 1.0, 0, takes_rows=True)
    full = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)[:, None]
    assert torch.equal(new, theta + full * grad)
