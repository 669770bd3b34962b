"""An independent NumPy implementation of docs/ALGORITHM.md §5 (the GRU in PyTorch's equations, and the
jacobian inversion for the GRU and the tanh RNN), written from the mathematical contract (docs/ALGORITHM.md) and PyTorch's
documentation alone: column vectors, one sequence at a time, each J_t formed as a dense
matrix and each regularized Gauss-Newton step solved exactly. It checks `tpri trace`.

Usage: jacobian_numpy.py PARAMS BATCH TRACE LOSS METHOD LR_TARGET REG TP_GRAD
The cell comes from the tensor names (gru.* or rnn.*). Prints the largest relative error
over every tensor of TRACE and exits 1 above 1e-10.
"""
import sys

import numpy as np
from safetensors.numpy import load_file

from compare import compare


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


class Gru:
    """PyTorch's GRU: weight_hh_l0 = [W_r; W_z; W_n], weight_ih_l0 likewise, two biases."""

    names = ["gru.w_hh", "gru.w_ih", "gru.b_ih", "gru.b_hh"]

    def __init__(self, P):
        self.Wh, self.Wi, self.bi, self.bh = (P[n] for n in self.names)
        self.d = self.Wh.shape[1]

    def gates(self, h, x):
        d = self.d
        gi = self.Wi @ x + self.bi
        gh = self.Wh @ h + self.bh
        r = sigmoid(gi[:d] + gh[:d])
        z = sigmoid(gi[d:2 * d] + gh[d:2 * d])
        hn = gh[2 * d:]
        n = np.tanh(gi[2 * d:] + r * hn)
        return r, z, n, hn

    def step(self, h, x):
        r, z, n, _ = self.gates(h, x)
        return (1 - z) * n + z * h

    def jacobian(self, h, x):
        d = self.d
        r, z, n, hn = self.gates(h, x)
        Wr, Wz, Wn = self.Wh[:d], self.Wh[d:2 * d], self.Wh[2 * d:]
        dn = (1 - z) * (1 - n ** 2)
        return (np.diag(z) + np.diag((h - n) * z * (1 - z)) @ Wz
                + np.diag(dn * hn * r * (1 - r)) @ Wr + np.diag(dn * r) @ Wn)

    def param_grads(self, h, x, e):
        """Gradients of <e, step(h, x)> in the four tensors."""
        r, z, n, hn = self.gates(h, x)
        a_n = e * (1 - z) * (1 - n ** 2)
        a_r = a_n * hn * r * (1 - r)
        a_z = e * (h - n) * z * (1 - z)
        dgi = np.concatenate([a_r, a_z, a_n])
        dgh = np.concatenate([a_r, a_z, a_n * r])
        return [np.outer(dgh, h), np.outer(dgi, x), dgi, dgh]


class Tanh:
    names = ["rnn.w_hh", "rnn.w_ih", "rnn.b_ih", "rnn.b_hh"]

    def __init__(self, P):
        self.W, self.U = P["rnn.w_hh"], P["rnn.w_ih"]
        # PyTorch's two biases, which add.
        self.b = P["rnn.b_ih"] + P["rnn.b_hh"]
        self.d = self.W.shape[0]

    def step(self, h, x):
        return np.tanh(self.W @ h + self.U @ x + self.b)

    def jacobian(self, h, x):
        return np.diag(1 - self.step(h, x) ** 2) @ self.W

    def param_grads(self, h, x, e):
        delta = (1 - self.step(h, x) ** 2) * e
        return [np.outer(delta, h), np.outer(delta, x), delta, delta]


def load(params_path, batch_path):
    """The parameters (float64, by name) and the batch x [B, T, p], y."""
    P = {k: v.astype(np.float64) for k, v in load_file(params_path).items()}
    batch = load_file(batch_path)
    return P, batch["x"].astype(np.float64), batch["y"]


def forward_and_head(cell, P, x, y, loss):
    """States h [T+1, B, d], the loss, g_T = dloss/dh_T [B, d] and the head's gradients."""
    V, c = P["head.w"], P["head.b"]
    B, T, _ = x.shape
    h = np.zeros((T + 1, B, cell.d))
    for s in range(B):
        for t in range(1, T + 1):
            h[t, s] = cell.step(h[t - 1, s], x[s, t - 1])
    z = np.stack([V @ h[T, s] + c for s in range(B)])
    if loss == "ce":
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        value = np.mean(lse - z[np.arange(B), y])
        dz = (np.exp(z - lse[:, None]) - np.eye(z.shape[1])[y]) / B
    else:
        value = np.mean((z - y) ** 2)
        dz = 2 * (z - y) / z.size
    return h, value, dz @ V, {"head.w": dz.T @ h[T], "head.b": dz.sum(axis=0)}


def backprop(cell, h, x, inject, recurse):
    """Gradients of the cell's tensors from e_t = inject(s, t) (+ J_{t+1}ᵀ e_{t+1})."""
    B, T, _ = x.shape
    total = None
    for s in range(B):
        e_next = None
        for t in range(T, 0, -1):
            e = inject(s, t).copy()
            if recurse and e_next is not None:
                e += cell.jacobian(h[t, s], x[s, t]).T @ e_next
            g = cell.param_grads(h[t - 1, s], x[s, t - 1], e)
            total = g if total is None else [a + b for a, b in zip(total, g)]
            e_next = e
    return total


def main():
    params_path, batch_path, trace_path, loss, method, lr_target, reg, tp_grad = sys.argv[1:]
    lr_target, reg = float(lr_target), float(reg)
    P, x, y = load(params_path, batch_path)
    cell = Gru(P) if "gru.w_hh" in P else Tanh(P)
    B, T, _ = x.shape
    d = cell.d
    h, value, g_T, grads = forward_and_head(cell, P, x, y, loss)
    out = {"h": h, "loss": np.array([value])}
    if method == "bp":
        rec = backprop(cell, h, x, lambda s, t: g_T[s] if t == T else np.zeros(d), True)
    else:
        v = h.copy()
        v[T] = h[T] - lr_target * g_T
        for s in range(B):
            for t in range(T, 1, -1):
                J = cell.jacobian(h[t - 1, s], x[s, t - 1])
                step = np.linalg.solve(J.T @ J + reg * np.eye(d), J.T @ (v[t, s] - h[t, s]))
                v[t - 1, s] = h[t - 1, s] + step
        rec = backprop(cell, h, x, lambda s, t: h[t, s] - v[t, s], tp_grad == "through-time")
        out["v"] = v
    grads.update(zip(cell.names, rec))
    out.update({"grad." + k: g for k, g in grads.items()})

    compare(out, trace_path)

if __name__ == "__main__":
    main()
