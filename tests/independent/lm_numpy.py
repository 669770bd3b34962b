"""An independent NumPy implementation of docs/ALGORITHM.md §13, outputs at every step
(the published language model), written from the mathematical contract alone (column
vectors, one sequence at a time, exact solve for P), to check `tpri trace --loss ce-seq`.

Usage: lm_numpy.py PARAMS BATCH TRACE METHOD TARGET_MODE LR_TARGET REG TP_GRAD
BATCH holds x [B, T, p] and the labels y [B, T] of every step. Prints the relative error
of every tensor of TRACE and exits 1 when the worst is above compare.TOL.

With a trained embedding table (PARAMS holds embed.weight [V, p], BATCH the token ids
tokens [B, T]; `tpri trace --train-embedding`) the inputs are the table's rows,
x_t = E[id_t], and its gradient is what reaches the inputs: every step's pre-activation
error δ_t times U, summed into the row of the token it embeds.
"""
import sys

import numpy as np
from safetensors.numpy import load_file

from compare import compare

EPS = 1e-3


def main():
    params_path, batch_path, trace_path, method, mode, lr_target, reg, tp_grad = sys.argv[1:]
    P = {k: v.astype(np.float64) for k, v in load_file(params_path).items()}
    out = trace(P, load_file(batch_path), method, mode, float(lr_target), float(reg), tp_grad)
    compare(out, trace_path)


def trace(P, batch, method, mode, lr_target, reg, tp_grad):
    W, U, V, c = P["rnn.w_hh"], P["rnn.w_ih"], P["head.w"], P["head.b"]
    b = P["rnn.b_ih"] + P["rnn.b_hh"]
    x = batch["x"].astype(np.float64)
    y = batch["y"].astype(np.int64)
    E = P.get("embed.weight")
    if E is not None:
        tokens = batch["tokens"].astype(np.int64)
        x = E[tokens]
        gE = np.zeros_like(E)
    B, T, _ = x.shape
    d = W.shape[0]
    h = np.zeros((T + 1, B, d))
    for s in range(B):
        for t in range(1, T + 1):
            h[t, s] = np.tanh(W @ h[t - 1, s] + U @ x[s, t - 1] + b)

    # A head at every step; ℓ averages the cross-entropy over all B·T predictions, and
    # g_t is its gradient at h_t through the head of step t alone.
    g = np.zeros((T + 1, B, d))
    gV, gc = np.zeros_like(V), np.zeros_like(c)
    step_losses = np.zeros(T)
    for t in range(1, T + 1):
        for s in range(B):
            z = V @ h[t, s] + c
            m = z.max()
            lse = m + np.log(np.exp(z - m).sum())
            step_losses[t - 1] += (lse - z[y[s, t - 1]]) / B
            dz = np.exp(z - lse)
            dz[y[s, t - 1]] -= 1.0
            dz /= B * T
            g[t, s] = V.T @ dz
            gV += np.outer(dz, h[t, s])
            gc += dz
    out = {
        "h": h,
        "loss": np.array([step_losses.mean()]),
        "step_losses": step_losses,
        "grad.head.w": gV,
        "grad.head.b": gc,
    }

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
                if E is not None:
                    # ∂/∂x_t of U x_t is Uᵀ δ_t, and x_t is row tokens[s, t-1] of E.
                    gE[tokens[s, t - 1]] += U.T @ delta
                delta_next = delta
        return gW, gU, gb

    if method == "bp":
        # BPTT with the loss gradient injected at every step.
        rnn = backprop(lambda s, t: g[t, s], True)
    else:
        Pinv = np.linalg.solve(W.T @ W + reg * np.eye(d), W.T)
        clamp = lambda u: np.clip(u, -1 + EPS, 1 - EPS)
        finv = lambda u, s, t: Pinv @ (np.arctanh(clamp(u)) - U @ x[s, t - 1] - b)
        # Each step's own target, one gradient step on h_t.
        local = h - lr_target * g
        v = h.copy()
        v[T] = local[T]
        for s in range(B):
            for t in range(T, 1, -1):
                vt, lt, ht = v[t, s], local[t, s], h[t, s]
                if mode == "linearized":
                    v[t - 1, s] = h[t - 1, s] + Pinv @ ((vt + lt - 2 * ht) / (1 - clamp(ht) ** 2))
                elif mode == "difference":
                    v[t - 1, s] = (
                        h[t - 1, s] + finv(vt, s, t) + finv(lt, s, t) - 2 * finv(ht, s, t)
                    )
                else:
                    v[t - 1, s] = finv(vt, s, t) + finv(lt, s, t)
        rnn = backprop(lambda s, t: h[t, s] - v[t, s], tp_grad == "through-time")
        out["v"] = v
        out["p_inv"] = Pinv
    out["grad.rnn.w_hh"], out["grad.rnn.w_ih"], out["grad.rnn.b_ih"] = rnn
    out["grad.rnn.b_hh"] = out["grad.rnn.b_ih"]
    if E is not None:
        out["grad.embed.weight"] = gE
    return out


if __name__ == "__main__":
    main()
