"""Adjoint sensitivities of the Lorenz-63 system in plain numpy, with revseq.

Integrates x' = f(x; sigma, rho, beta) with classical Runge-Kutta (RK4) over
n = 10^5 steps of dt = 1e-4 (to t = 10), and computes the gradient of the
final-time objective J = z(t) + x(t) y(t) / 10 with respect to the initial
state and the three parameters in one backward sweep: a
``revseq.Recurrence`` with ``params`` whose ``vjp`` returns
``(adj_x, adj_params)``, the adjoint of one RK4 step written by hand.
BinomialCheckpointing keeps about 450 of the 10^5 states.

The gradient is checked against central finite differences (all 12
perturbed trajectories integrated at once, as one batch). The system is
chaotic, so sensitivities grow like exp(0.9 t) on average: at t = 10 they
are still moderate and finite differences still agree with the adjoint;
resolving a long horizon takes many small steps, which is what needs the
checkpointing. Run it as a script: ``python examples/lorenz_adjoint.py``.
"""

from __future__ import annotations

import time

import numpy as np

import revseq

DT = 1e-4
N = 100_000  # t = N * DT = 10


def lorenz(x: float, y: float, z: float, sigma: float, rho: float, beta: float) -> tuple[float, float, float]:
    """f(x; sigma, rho, beta). Plain floats: for a 3-vector, numpy's per-call overhead would dominate."""
    return sigma * (y - x), x * (rho - z) - y, x * y - beta * z


def lorenz_vjp(
    x: float, y: float, z: float, sigma: float, rho: float, beta: float, a0: float, a1: float, a2: float
) -> tuple[float, float, float, float, float, float]:
    """(J_x^T a, J_p^T a) of f at (x, y, z): the adjoint with respect to the state, then the parameters."""
    return (
        -sigma * a0 + (rho - z) * a1 + y * a2,
        sigma * a0 - a1 + x * a2,
        -x * a1 - beta * a2,
        (y - x) * a0,
        x * a1,
        -z * a2,
    )


def rk4(s: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One RK4 step of length DT."""
    x, y, z = s.tolist()
    sigma, rho, beta = p.tolist()
    h = 0.5 * DT
    k1 = lorenz(x, y, z, sigma, rho, beta)
    k2 = lorenz(x + h * k1[0], y + h * k1[1], z + h * k1[2], sigma, rho, beta)
    k3 = lorenz(x + h * k2[0], y + h * k2[1], z + h * k2[2], sigma, rho, beta)
    k4 = lorenz(x + DT * k3[0], y + DT * k3[1], z + DT * k3[2], sigma, rho, beta)
    w = DT / 6
    return np.array(
        [
            x + w * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]),
            y + w * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]),
            z + w * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2]),
        ]
    )


def rk4_vjp(s: np.ndarray, p: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The adjoint of one RK4 step: (d<a, rk4(s, p)>/ds, d<a, rk4(s, p)>/dp).

    It re-runs the step to get the stages (the one extra step per adjoint
    an autodiff framework would make too), then goes back through them,
    last stage first: k4 = f(s + DT k3), k3 = f(s + DT/2 k2), k2 = f(s + DT/2 k1), k1 = f(s).
    """
    x, y, z = s.tolist()
    sigma, rho, beta = p_ = p.tolist()
    h = 0.5 * DT
    k1 = lorenz(x, y, z, *p_)
    s2 = (x + h * k1[0], y + h * k1[1], z + h * k1[2])
    k2 = lorenz(*s2, *p_)
    s3 = (x + h * k2[0], y + h * k2[1], z + h * k2[2])
    k3 = lorenz(*s3, *p_)
    s4 = (x + DT * k3[0], y + DT * k3[1], z + DT * k3[2])
    a = a.tolist()
    adj = [*a, 0.0, 0.0, 0.0]  # (d/ds, d/dp): s enters x_{t+1} directly
    stage = [(DT / 6) * v for v in a]  # the adjoint of k4
    for point, weight, coupling in ((s4, DT / 3, DT), (s3, DT / 3, h), (s2, DT / 6, h), ((x, y, z), 0.0, 0.0)):
        g = lorenz_vjp(*point, sigma, rho, beta, *stage)
        adj = [u + v for u, v in zip(adj, g, strict=True)]
        # the previous stage's adjoint: its own weight in the update, plus what flows through this stage's input
        stage = [weight * a[i] + coupling * g[i] for i in range(3)]
    return np.array(adj[:3]), np.array(adj[3:])


def rk4_batch(s: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The same RK4 step for many trajectories at once (s[..., 3], p[..., 3]): the finite differences."""

    def f(s: np.ndarray) -> np.ndarray:
        x, y, z = s[..., 0], s[..., 1], s[..., 2]
        return np.stack([p[..., 0] * (y - x), x * (p[..., 1] - z) - y, x * y - p[..., 2] * z], axis=-1)

    k1 = f(s)
    k2 = f(s + 0.5 * DT * k1)
    k3 = f(s + 0.5 * DT * k2)
    k4 = f(s + DT * k3)
    return s + (DT / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def objective(s: np.ndarray) -> np.ndarray:
    return s[..., 2] + s[..., 0] * s[..., 1] / 10


def objective_gradient(s: np.ndarray) -> np.ndarray:
    return np.array([s[1] / 10, s[0] / 10, 1.0])


NOTHING = np.zeros(3)


def final_time_loss(s: np.ndarray, t: int, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The per-state loss revseq sums over x_1 .. x_n: J at t = n, nothing before."""
    if t == N:
        return float(objective(s)), objective_gradient(s), NOTHING
    return 0.0, NOTHING, NOTHING


def finite_differences(x0: np.ndarray, p: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of J for the 3 initial coordinates and the 3 parameters, in one batched run."""
    shifts = eps * np.eye(3)
    states = np.concatenate([x0 + shifts, x0 - shifts, np.repeat(x0[None], 6, axis=0)])
    params = np.concatenate([np.repeat(p[None], 6, axis=0), p + shifts, p - shifts])
    for _ in range(N):
        states = rk4_batch(states, params)
    j = objective(states)
    return (j[0:3] - j[3:6]) / (2 * eps), (j[6:9] - j[9:12]) / (2 * eps)


def main() -> None:
    x0 = np.array([1.0, 1.0, 1.0])
    p = np.array([10.0, 28.0, 8.0 / 3.0])  # sigma, rho, beta: the classic chaotic regime
    rec = revseq.Recurrence(
        f=lambda s, t, p: rk4(s, p),
        vjp=lambda s, t, p, a: rk4_vjp(s, p, a),  # -> (adj_x, adj_params)
        loss=final_time_loss,
        params=p,
        indexed=True,  # the loss needs t to know the final state
    )
    strategy = revseq.BinomialCheckpointing()  # about sqrt(2n) checkpoints, at most 2n steps

    start = time.perf_counter()
    out = revseq.backprop(rec, x0, N, strategy)  # objective: the sum of the losses, so J
    seconds = time.perf_counter() - start
    stats = out.stats
    print(f"Lorenz-63, RK4, n = {N} steps of dt = {DT} (t = {N * DT:g}); J = z + x y / 10 at t = {N * DT:g}")
    print(f"x(t) = {np.array2string(out.state, precision=6)}, J = {out.loss:.6f}")
    print(
        f"{strategy!r}: {stats.forward_steps} RK4 steps (+ {N} re-runs inside the adjoints), "
        f"{stats.peak_checkpoints} checkpoints = {stats.peak_bytes / 1e3:.1f} kB "
        f"(storing all {N} states: {N * x0.nbytes / 1e6:.1f} MB); {seconds:.1f} s"
    )
    assert stats.as_cost() == strategy.cost(N)

    eps = 1e-6
    start = time.perf_counter()
    fd_x, fd_p = finite_differences(x0, p, eps)
    seconds = time.perf_counter() - start
    print(f"\ncentral finite differences (eps = {eps:g}, 12 trajectories in one batch): {seconds:.1f} s")
    print(f"{'':22} {'adjoint (revseq)':>48} {'finite differences':>48}")
    for name, adj, fd in (("dJ/dx0", out.gradient, fd_x), ("dJ/d(sigma, rho, beta)", out.params_gradient, fd_p)):
        print(f"{name:22} {np.array2string(adj, precision=6):>48} {np.array2string(fd, precision=6):>48}")
    error = max(
        np.max(np.abs(out.gradient - fd_x)) / np.max(np.abs(fd_x)),
        np.max(np.abs(out.params_gradient - fd_p)) / np.max(np.abs(fd_p)),
    )
    print(f"largest relative difference: {error:.1e}")
    assert error < 1e-5, error


if __name__ == "__main__":
    main()
