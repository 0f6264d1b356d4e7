"""Unit tests of TRPO's pure helpers (no Ray): CG, flat gradients, Fisher-vector product,
backtracking line search."""

from __future__ import annotations

import pytest
import torch

from algorithms.trpo.optim import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    get_flat_params,
    restore_params,
    snapshot_params,
)


def _random_spd(n: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cg_solves_random_spd_system(seed):
    n = 30
    a = _random_spd(n, cond=50.0, seed=seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iters=200, residual_tol=1e-20)
    exact = torch.linalg.solve(a, b)
    assert torch.linalg.norm(a @ res.x - b) <= 1e-8 * torch.linalg.norm(b)
    assert torch.allclose(res.x, exact, rtol=1e-7, atol=1e-9)
    assert res.residual_norm < 1e-8
    # In exact arithmetic CG needs at most n steps; with rounding only a few more.
    assert res.iterations <= n + 10


def test_cg_exact_in_n_steps_and_stops_on_tolerance():
    a = _random_spd(5, cond=10.0, seed=3)
    b = torch.ones(5, dtype=torch.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iters=5, residual_tol=0.0)
    assert torch.allclose(a @ res.x, b, atol=1e-8)
    # b already solved at 0 iterations when tolerance is huge.
    res0 = conjugate_gradient(lambda v: a @ v, b, max_iters=5, residual_tol=1e9)
    assert res0.iterations == 0 and torch.count_nonzero(res0.x) == 0


def test_cg_few_iterations_reduce_residual_monotonically_in_a_norm():
    a = _random_spd(40, cond=1e3, seed=4)
    b = torch.randn(40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = torch.linalg.solve(a, b)
    errs = []
    for k in (1, 3, 10, 40):
        x = conjugate_gradient(lambda v: a @ v, b, max_iters=k, residual_tol=0.0).x
        e = x - exact
        errs.append(torch.sqrt(e @ a @ e).item())
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:]))


def test_cg_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_iters"):
        conjugate_gradient(lambda v: v, torch.ones(3), max_iters=0)
    with pytest.raises(ValueError, match="1-d"):
        conjugate_gradient(lambda v: v, torch.ones(3, 3))


def test_flat_grad_matches_autograd_and_zero_fills_unused():
    torch.manual_seed(0)
    w = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    unused = torch.randn(4, requires_grad=True)
    x = torch.randn(5, 3)
    out = ((x @ w + b) ** 2).sum()
    g = flat_grad(out, [w, b, unused])
    gw, gb = torch.autograd.grad(((x @ w + b) ** 2).sum(), [w, b])
    assert g.shape == (6 + 2 + 4,)
    assert torch.allclose(g[:6], gw.reshape(-1)) and torch.allclose(g[6:8], gb)
    assert torch.count_nonzero(g[8:]) == 0


def _tiny_policy(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)
    ).double()


def _categorical_kl(old_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    old_logp = torch.log_softmax(old_logits, -1)
    new_logp = torch.log_softmax(new_logits, -1)
    return (old_logp.exp() * (old_logp - new_logp)).sum(-1).mean()


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_fisher_vector_product_equals_explicit_kl_hessian_product(damping):
    net = _tiny_policy(0)
    params = list(net.parameters())
    obs = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        old_logits = net(obs)

    mean_kl = _categorical_kl(old_logits, net(obs))
    fvp = fisher_vector_product(mean_kl, params, damping=damping)

    # Explicit Hessian of the mean KL w.r.t. the flat parameter vector at theta_old.
    theta0 = get_flat_params(params)
    shapes = [p.shape for p in params]

    def kl_of_flat(theta: torch.Tensor) -> torch.Tensor:
        chunks, offset = [], 0
        for s in shapes:
            n = int(torch.tensor(s).prod())
            chunks.append(theta[offset : offset + n].view(s))
            offset += n
        h = torch.tanh(obs @ chunks[0].T + chunks[1])
        return _categorical_kl(old_logits, h @ chunks[2].T + chunks[3])

    hessian = torch.autograd.functional.hessian(kl_of_flat, theta0)
    for seed in range(3):
        v = torch.randn(theta0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        expected = hessian @ v + damping * v
        assert torch.allclose(fvp(v), expected, rtol=1e-8, atol=1e-10)

    # The KL Hessian at theta_old is the Fisher matrix: symmetric, positive semi-definite.
    assert torch.allclose(hessian, hessian.T, atol=1e-10)
    assert torch.linalg.eigvalsh(hessian).min() > -1e-10


def _quadratic_setup():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(3, 2))
    p2 = torch.nn.Parameter(torch.randn(4))
    return [p1, p2]


def test_line_search_failure_restores_parameters_bit_for_bit():
    params = _quadratic_setup()
    before = [p.detach().clone() for p in params]
    # Awkward step values so that theta + f * step - f * step would not round-trip.
    step = torch.randn(10) * 1e3 + 0.1
    calls = []

    def never_acceptable():
        calls.append(get_flat_params(params))
        return -1.0, 0.0  # surrogate got worse

    res = backtracking_line_search(
        params, step, never_acceptable, max_kl=0.01, max_steps=7, backtrack_ratio=0.5
    )
    assert not res.success and res.backtracks == 7 and res.step_fraction == 0.0
    assert res.kl == 0.0 and res.improvement == 0.0
    assert len(calls) == 7
    # Candidates really moved the parameters (the search did try them) ...
    assert all(not torch.equal(c, torch.cat([b.reshape(-1) for b in before])) for c in calls)
    # ... and the old values are back exactly.
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)
        assert p.detach().view(torch.int32).equal(b.view(torch.int32))


def test_line_search_rejects_kl_violations_and_nan():
    params = _quadratic_setup()
    before = snapshot_params(params)
    outcomes = iter([(1.0, 0.5), (float("nan"), 0.0), (1.0, float("nan"))])
    res = backtracking_line_search(
        params, torch.ones(10), lambda: next(outcomes), max_kl=0.01, max_steps=3
    )
    assert not res.success
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_line_search_accepts_first_feasible_fraction():
    params = _quadratic_setup()
    theta0 = get_flat_params(params)
    step = torch.linspace(-1, 1, 10)

    def evaluate():
        # KL grows quadratically with distance; surrogate improves linearly.
        d = get_flat_params(params) - theta0
        frac = (d @ step / (step @ step)).item()
        return frac, 0.03 * frac**2

    res = backtracking_line_search(
        params, step, evaluate, max_kl=0.01, max_steps=10, backtrack_ratio=0.5
    )
    # 0.03 f^2 <= 0.01  <=>  f <= 0.577: the boundary lies strictly between the fractions 1 and 0.5
    # (KL 0.03 vs 0.0075), so float32 rounding cannot decide; accepted after one backtrack.
    assert res.success and res.backtracks == 1 and res.step_fraction == 0.5
    assert res.kl == pytest.approx(0.0075, rel=1e-5)
    assert torch.allclose(get_flat_params(params), theta0 + 0.5 * step)


def test_line_search_accept_ratio_requires_fraction_of_predicted_gain():
    params = _quadratic_setup()
    snap = snapshot_params(params)
    # Actual gain is 10% of predicted at every fraction: ratio 0.5 rejects all.
    res = backtracking_line_search(
        params, torch.ones(10), lambda: (0.1, 0.0), max_kl=1.0, max_steps=3,
        expected_improvement=1.0, accept_ratio=0.5,
    )
    assert not res.success
    restore_params(params, snap)
    res = backtracking_line_search(
        params, torch.ones(10), lambda: (0.1, 0.0), max_kl=1.0, max_steps=3,
        expected_improvement=1.0, accept_ratio=0.05,
    )
    assert res.success and res.backtracks == 0


def test_line_search_validates_arguments():
    params = _quadratic_setup()
    with pytest.raises(ValueError, match="max_steps"):
        backtracking_line_search(params, torch.ones(10), lambda: (1.0, 0.0), max_kl=0.1, max_steps=0)
    with pytest.raises(ValueError, match="backtrack_ratio"):
        backtracking_line_search(params, torch.ones(10), lambda: (1.0, 0.0), max_kl=0.1, backtrack_ratio=1.0)
    with pytest.raises(ValueError, match="full_step"):
        backtracking_line_search(params, torch.ones(9), lambda: (1.0, 0.0), max_kl=0.1)
