"""An independent NumPy implementation of the GRU's per-gate inversion (docs/ALGORITHM.md §5,
"Per-gate inversion"; the published code's GRU `target_prop`), written from that text and
the published formula alone: column vectors, one sequence at a time, each
P_g = (W_gᵀW_g + rI)⁻¹W_gᵀ by an exact solve. The GRU's forward pass, head and gradients
are jacobian_numpy.py's (PyTorch's equations). It checks `tpri trace --inversion per-gate`.

Usage: gru_per_gate_numpy.py PARAMS BATCH TRACE LOSS LR_TARGET REG TP_GRAD
Prints the largest relative error over every tensor of TRACE and exits 1 above 1e-10.

It also checks the docs' reading of the formula: with each P_g put back to W_gᵀ and each
division by the sigmoid's slope made a multiplication, the step is Jᵀδ for the Jacobian J
of the cell written h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n.
"""
import sys

import numpy as np

from compare import compare
from jacobian_numpy import Gru, backprop, forward_and_head, load

EPS = 1e-3


def slope(u):
    """s(u) = ū(1 − ū), ū = clamp(u, ε, 1 − ε)."""
    c = np.clip(u, EPS, 1 - EPS)
    return c * (1 - c)


def per_gate_step(cell, P, hp, x, delta, divide):
    """The published step's increment v_{t−1} − h_{t−1}; `divide(b, u)` is b ⊘ s(u)."""
    r, z, n, a = cell.gates(hp, x)
    Pr, Pz, Pn = P
    dn = (1 - n ** 2) * z * delta
    return ((1 - z) * delta + Pz @ divide((n - hp) * delta, z)
            + Pr @ divide(a * dn, r) + Pn @ (r * dn))


def check_reading(cell, rng):
    """The formula with W_gᵀ and multiplied slopes is the docstring cell's Jᵀδ."""
    d = cell.d
    hp, x, delta = rng.standard_normal(d) * 0.5, rng.standard_normal(cell.Wi.shape[1]), rng.standard_normal(d)
    W = [cell.Wh[g * d:(g + 1) * d].T for g in range(3)]
    got = per_gate_step(cell, W, hp, x, delta, lambda b, u: b * u * (1 - u))
    r, z, n, a = cell.gates(hp, x)
    Wr, Wz, Wn = (cell.Wh[g * d:(g + 1) * d] for g in range(3))
    # h_t = (1 − z) h + z n: ∂/∂h = diag(1 − z) + diag(n − h) diag(z(1 − z)) W_z
    #   + diag(z (1 − n²)) [diag(a r(1 − r)) W_r + diag(r) W_n].
    J = (np.diag(1 - z) + np.diag((n - hp) * z * (1 - z)) @ Wz
         + np.diag(z * (1 - n ** 2)) @ (np.diag(a * r * (1 - r)) @ Wr + np.diag(r) @ Wn))
    err = np.linalg.norm(got - J.T @ delta) / np.linalg.norm(J.T @ delta)
    assert err < 1e-12, f"the per-gate formula is not the docstring cell's transposed Jacobian: {err:.2e}"


def main():
    params_path, batch_path, trace_path, loss, lr_target, reg, tp_grad = sys.argv[1:]
    lr_target, reg = float(lr_target), float(reg)
    P, x, y = load(params_path, batch_path)
    cell = Gru(P)
    check_reading(cell, np.random.default_rng(0))
    B, T, _ = x.shape
    d = cell.d
    h, value, g_T, grads = forward_and_head(cell, P, x, y, loss)
    blocks = [cell.Wh[g * d:(g + 1) * d] for g in range(3)]
    p_gates = [np.linalg.solve(W.T @ W + reg * np.eye(d), W.T) for W in blocks]
    v = h.copy()
    v[T] = h[T] - lr_target * g_T
    for s in range(B):
        for t in range(T, 1, -1):
            step = per_gate_step(cell, p_gates, h[t - 1, s], x[s, t - 1], v[t, s] - h[t, s],
                                 lambda b, u: b / slope(u))
            v[t - 1, s] = h[t - 1, s] + step
    rec = backprop(cell, h, x, lambda s, t: h[t, s] - v[t, s], tp_grad == "through-time")
    grads.update(zip(cell.names, rec))
    out = {"h": h, "loss": np.array([value]), "v": v}
    out.update({f"p_inv.{g}": p for g, p in zip("rzn", p_gates)})
    out.update({"grad." + k: g for k, g in grads.items()})

    compare(out, trace_path)


if __name__ == "__main__":
    main()
