"""An independent NumPy implementation of docs/ALGORITHM.md §1–§4, written from the
mathematical contract alone (which that document now states)
(column vectors, one sequence at a time, exact solve for P), to check `tpri trace`.

Usage: spec_numpy.py PARAMS BATCH TRACE LOSS METHOD TARGET_MODE LR_TARGET REG TP_GRAD
Prints the largest relative error over every tensor of TRACE and exits 1 above 1e-10.
"""
import sys

import numpy as np
from safetensors.numpy import load_file

from compare import compare

EPS = 1e-3


def main():
    params_path, batch_path, trace_path, loss, method, mode, lr_target, reg, tp_grad = sys.argv[1:]
    P = {k: v.astype(np.float64) for k, v in load_file(params_path).items()}
    out = trace(P, load_file(batch_path), loss, method, mode, float(lr_target), float(reg), tp_grad)
    compare(out, trace_path)


def trace(P, batch, loss, method, mode, lr_target, reg, tp_grad):
    """The trace of one iteration at parameters P (tpri's names) on batch {x, y}: h, loss,
    and for TP v and p_inv, and every parameter's gradient as grad.<name>."""
    W, U, V, c = P["rnn.w_hh"], P["rnn.w_ih"], P["head.w"], P["head.b"]
    # PyTorch's two biases, which add.
    b = P["rnn.b_ih"] + P["rnn.b_hh"]
    x = batch["x"].astype(np.float64)
    y = batch["y"]
    B, T, _ = x.shape
    d = W.shape[0]
    h = np.zeros((T + 1, B, d))
    for s in range(B):
        for t in range(1, T + 1):
            h[t, s] = np.tanh(W @ h[t - 1, s] + U @ x[s, t - 1] + b)
    z = np.stack([V @ h[T, s] + c for s in range(B)])
    if loss == "ce":
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        value = np.mean(lse - z[np.arange(B), y])
        prob = np.exp(z - lse[:, None])
        onehot = np.eye(z.shape[1])[y]
        dz = (prob - onehot) / B
    else:
        value = np.mean((z - y) ** 2)
        dz = 2 * (z - y) / z.size
    g_T = dz @ V
    grads = {"head.w": dz.T @ h[T], "head.b": dz.sum(axis=0)}

    def backprop(inject, recurse):
        gW, gU, gb = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
        for s in range(B):
            delta_next = None
            for t in range(T, 0, -1):
                e = inject(s, t).copy()
                if recurse and delta_next is not None:
                    e += W.T @ delta_next
                delta = (1 - h[t, s] ** 2) * e
                gW += np.outer(delta, h[t - 1, s])
                gU += np.outer(delta, x[s, t - 1])
                gb += delta
                delta_next = delta
        return gW, gU, gb

    out = {"h": h, "loss": np.array([value])}
    if method == "bp":
        rnn = backprop(lambda s, t: g_T[s] if t == T else np.zeros(d), True)
    else:
        Pinv = np.linalg.solve(W.T @ W + reg * np.eye(d), W.T)
        clamp = lambda u: np.clip(u, -1 + EPS, 1 - EPS)
        finv = lambda v, s, t: Pinv @ (np.arctanh(v) - U @ x[s, t - 1] - b)
        v = h.copy()
        v[T] = h[T] - lr_target * g_T
        for s in range(B):
            for t in range(T, 1, -1):
                if mode == "linearized":
                    v[t - 1, s] = h[t - 1, s] + Pinv @ ((v[t, s] - h[t, s]) / (1 - clamp(h[t, s]) ** 2))
                elif mode == "difference":
                    v[t - 1, s] = h[t - 1, s] + finv(clamp(v[t, s]), s, t) - finv(clamp(h[t, s]), s, t)
                else:
                    v[t - 1, s] = finv(clamp(v[t, s]), s, t)
        rnn = backprop(lambda s, t: h[t, s] - v[t, s], tp_grad == "through-time")
        out["v"] = v
        out["p_inv"] = Pinv
    grads["rnn.w_hh"], grads["rnn.w_ih"], grads["rnn.b_ih"] = rnn
    grads["rnn.b_hh"] = grads["rnn.b_ih"]
    out.update({"grad." + k: g for k, g in grads.items()})
    return out


if __name__ == "__main__":
    main()
