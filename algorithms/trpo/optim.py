"""Pure, typed numerical helpers for TRPO's natural-gradient step.

Nothing here knows about RLlib: every function takes tensors, parameter lists or
callables and returns tensors or small result records, so each piece can be tested
on its own (see ``tests/test_trpo_optim.py``).

* :func:`conjugate_gradient` solves ``A x = b`` for a symmetric positive-definite ``A``
  that is only available as a matrix-vector function (the style of sb3-contrib's
  ``common/utils.py``).
* :func:`flat_grad` concatenates the gradients of a scalar w.r.t. a parameter list.
* :func:`fisher_vector_product` builds ``v -> (H_KL + damping I) v`` by double
  backward through a mean KL divergence (H_KL is the KL's Hessian at the current
  parameters, which equals the Fisher information matrix there).
* :func:`backtracking_line_search` tries shrinking fractions of a full step, keeps the
  first one that satisfies the trust region and improves the surrogate, and otherwise
  restores the old parameters bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch

__all__ = [
    "CGResult",
    "LineSearchResult",
    "backtracking_line_search",
    "conjugate_gradient",
    "fisher_vector_product",
    "flat_grad",
    "get_flat_params",
    "restore_params",
    "snapshot_params",
]


@dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        x: Approximate solution of ``A x = b``.
        residual_norm: Euclidean norm of the final residual ``b - A x`` (as tracked by
            the CG recursion).
        iterations: Number of matrix-vector products performed.
    """

    x: torch.Tensor
    residual_norm: float
    iterations: int


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    max_iters: int = 15,
    residual_tol: float = 1e-10,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``v -> A v``.

    Args:
        matvec: Function returning ``A v`` for a vector ``v`` shaped like ``b``.
        b: Right-hand side, a 1-d tensor.
        max_iters: Maximum number of CG iterations (= matrix-vector products).
        residual_tol: Stop once the squared residual norm drops below this.

    Returns:
        A :class:`CGResult` with the solution, final residual norm and iterations used.
    """
    if b.dim() != 1:
        raise ValueError(f"`b` must be a 1-d tensor, got shape {tuple(b.shape)}")
    if max_iters < 1:
        raise ValueError(f"`max_iters` must be >= 1, got {max_iters}")
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x with x = 0
    p = r.clone()
    rr = torch.dot(r, r)
    iterations = 0
    for _ in range(max_iters):
        if rr.item() < residual_tol:
            break
        ap = matvec(p)
        p_ap = torch.dot(p, ap)
        if not torch.isfinite(p_ap) or p_ap.item() <= 0.0:
            # Not positive definite along p (or numerical breakdown): stop here.
            break
        alpha = rr / p_ap
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        iterations += 1
    return CGResult(x=x, residual_norm=math.sqrt(max(rr.item(), 0.0)), iterations=iterations)


def flat_grad(
    output: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    retain_graph: bool = False,
    create_graph: bool = False,
) -> torch.Tensor:
    """Gradient of scalar ``output`` w.r.t. ``params``, concatenated into one 1-d tensor.

    Parameters that ``output`` does not depend on contribute zeros.
    """
    grads = torch.autograd.grad(
        output,
        list(params),
        retain_graph=retain_graph,
        create_graph=create_graph,
        allow_unused=True,
    )
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params)
        ]
    )


def fisher_vector_product(
    mean_kl: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    damping: float = 0.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``v -> (H v + damping * v)``, H the Hessian of ``mean_kl`` w.r.t. params.

    ``mean_kl`` must be ``KL(pi_old || pi_theta)`` (or the reverse) averaged over states,
    with ``pi_old`` detached, evaluated at ``theta = theta_old``; there its gradient is 0
    and its Hessian is the Fisher information matrix. The first derivative is built
    once with ``create_graph=True``; each product costs one extra backward pass.
    """
    if damping < 0:
        raise ValueError(f"`damping` must be >= 0, got {damping}")
    params = list(params)
    grad_kl = flat_grad(mean_kl, params, retain_graph=True, create_graph=True)

    def fvp(vector: torch.Tensor) -> torch.Tensor:
        grad_kl_v = torch.dot(grad_kl, vector.detach())
        hv = flat_grad(grad_kl_v, params, retain_graph=True)
        return hv + damping * vector

    return fvp


def get_flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """All parameters concatenated into one detached 1-d tensor (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def snapshot_params(params: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Exact copies of the parameters' current values, one tensor per parameter."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def restore_params(params: Sequence[torch.Tensor], snapshot: Sequence[torch.Tensor]) -> None:
    """Copy a :func:`snapshot_params` snapshot back into ``params`` (bit-exact)."""
    for p, s in zip(params, snapshot):
        p.copy_(s)


@torch.no_grad()
def _set_params_from_step(
    params: Sequence[torch.Tensor],
    snapshot: Sequence[torch.Tensor],
    step: torch.Tensor,
    fraction: float,
) -> None:
    offset = 0
    for p, s in zip(params, snapshot):
        n = p.numel()
        p.copy_(s + fraction * step[offset : offset + n].view_as(p))
        offset += n


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes:
        success: Whether a step was accepted (else the old parameters are restored).
        backtracks: Number of shrinkings before acceptance; ``max_steps`` on failure.
        step_fraction: Fraction of the full step taken (0.0 on failure).
        improvement: Surrogate improvement of the accepted step (0.0 on failure).
        kl: KL of the accepted step (0.0 on failure, since nothing changed).
    """

    success: bool
    backtracks: int
    step_fraction: float
    improvement: float
    kl: float


def backtracking_line_search(
    params: Sequence[torch.Tensor],
    full_step: torch.Tensor,
    evaluate: Callable[[], Tuple[float, float]],
    *,
    max_kl: float,
    max_steps: int = 10,
    backtrack_ratio: float = 0.8,
    expected_improvement: float = 0.0,
    accept_ratio: float = 0.0,
) -> LineSearchResult:
    """Backtracking line search along ``full_step`` under a KL constraint.

    Tries ``theta_old + ratio**i * full_step`` for ``i = 0 .. max_steps - 1``. After
    setting the parameters, ``evaluate()`` is called and must return
    ``(surrogate_improvement, kl)`` measured at the current parameters against the old
    policy. The first candidate with a finite improvement ``> 0`` that is also at least
    ``accept_ratio * fraction * expected_improvement`` (the linear prediction; 0 turns
    this test off, as in sb3-contrib) and ``kl <= max_kl`` is kept. If none qualifies,
    the parameters are restored to their exact old values.

    Args:
        params: The parameters being optimized (modified in place).
        full_step: Flat step vector, same total size as ``params``.
        evaluate: Callable evaluating the candidate currently loaded in ``params``.
        max_kl: Trust-region radius.
        max_steps: Number of candidates to try (>= 1).
        backtrack_ratio: Shrink factor in (0, 1).
        expected_improvement: First-order predicted improvement of the full step.
        accept_ratio: Minimum ratio of actual to predicted improvement (>= 0).
    """
    if max_steps < 1:
        raise ValueError(f"`max_steps` must be >= 1, got {max_steps}")
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"`backtrack_ratio` must be in (0, 1), got {backtrack_ratio}")
    if accept_ratio < 0:
        raise ValueError(f"`accept_ratio` must be >= 0, got {accept_ratio}")
    params = list(params)
    n = sum(p.numel() for p in params)
    if full_step.numel() != n:
        raise ValueError(
            f"`full_step` has {full_step.numel()} elements, parameters have {n}"
        )
    snapshot = snapshot_params(params)
    fraction = 1.0
    for i in range(max_steps):
        _set_params_from_step(params, snapshot, full_step, fraction)
        improvement, kl = evaluate()
        if (
            math.isfinite(improvement)
            and math.isfinite(kl)
            and improvement > 0.0
            and improvement >= accept_ratio * fraction * expected_improvement
            and kl <= max_kl
        ):
            return LineSearchResult(
                success=True,
                backtracks=i,
                step_fraction=fraction,
                improvement=float(improvement),
                kl=float(kl),
            )
        fraction *= backtrack_ratio
    restore_params(params, snapshot)
    return LineSearchResult(
        success=False, backtracks=max_steps, step_fraction=0.0, improvement=0.0, kl=0.0
    )
