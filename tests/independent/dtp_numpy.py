"""An independent NumPy implementation of DTP as docs/ALGORITHM.md §14 states it (itself
checked against the published code's `target_auto_enc` oracle), one sequence at a time
with column vectors, to check `tpri trace --method dtp`. The noise stream is computed here
from its definition (splitmix64 key, PCG hash, Box–Muller), not read from the trace.

Usage: dtp_numpy.py PARAMS BATCH TRACE LOSS LR_TARGET TP_GRAD NOISE SEED
Prints the relative error of every tensor of TRACE and exits 1 above 1e-10.
"""
import sys

import numpy as np
from safetensors.numpy import load_file

from compare import compare

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def pcg(v):
    """PCG's hash on an array of uint64 holding 32-bit values."""
    state = (v * 747796405 + 2891336453) & M32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & M32
    return (word >> 22) ^ word


def gaussian(seed, iteration, n):
    """The stream's standard normal draws at the element numbers n (docs §14)."""
    key = splitmix64(splitmix64(seed) ^ iteration)
    k0, k1 = key & M32, key >> 32
    n = np.asarray(n, dtype=np.uint64) & M32
    s = pcg(pcg(n ^ np.uint64(k0)) ^ np.uint64(k1))
    u1 = ((pcg(s) >> 8) + 1).astype(np.float64) / 2.0**24
    u2 = (pcg(s ^ np.uint64(0x9E3779B9)) >> 8).astype(np.float64) / 2.0**24
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def main():
    params_path, batch_path, trace_path, loss, lr_target, tp_grad, noise, seed = sys.argv[1:]
    P = {k: v.astype(np.float64) for k, v in load_file(params_path).items()}
    out = trace(P, load_file(batch_path), loss, float(lr_target), tp_grad, float(noise), int(seed))
    compare(out, trace_path)


def trace(P, batch, loss, lr_target, tp_grad, sigma, seed):
    W, U, V, c = P["rnn.w_hh"], P["rnn.w_ih"], P["head.w"], P["head.b"]
    b = P["rnn.b_ih"] + P["rnn.b_hh"]
    Vr, cr = P["dtp.w_rev"], P["dtp.b_rev"]
    x = batch["x"].astype(np.float64)
    y = batch["y"]
    B, T, _ = x.shape
    d = W.shape[0]
    F = lambda h, s, t: np.tanh(W @ h + U @ x[s, t - 1] + b)
    g = lambda h, s, t: np.tanh(Vr @ h + U @ x[s, t - 1] + cr)

    h = np.zeros((T + 1, B, d))
    for s in range(B):
        for t in range(1, T + 1):
            h[t, s] = F(h[t - 1, s], s, t)
    z = np.stack([V @ h[T, s] + c for s in range(B)])
    if loss == "ce":
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        value = np.mean(lse - z[np.arange(B), y])
        dz = (np.exp(z - lse[:, None]) - np.eye(z.shape[1])[y]) / B
    else:
        value = np.mean((z - y) ** 2)
        dz = 2 * (z - y) / z.size
    g_T = dz @ V
    grads = {"head.w": dz.T @ h[T], "head.b": dz.sum(axis=0)}

    # The reverse layer's reconstruction loss Σ_t ½‖g(F(h_{t−1} + η), x_t) − (h_{t−1} + η)‖² / B
    # over t = 1 … T, with the first iteration's noise.
    gV, gc = np.zeros_like(Vr), np.zeros_like(cr)
    for t in range(1, T + 1):
        for s in range(B):
            n = ((t - 1) * B + s) * d + np.arange(d)
            eta = sigma * gaussian(seed, 1, n) if sigma > 0 else np.zeros(d)
            hn = h[t - 1, s] + eta
            f = F(hn, s, t)
            r = g(f, s, t)
            delta = (r - hn) * (1 - r**2) / B
            gV += np.outer(delta, f)
            gc += delta
    grads["dtp.w_rev"], grads["dtp.b_rev"] = gV, gc

    # Difference targets through the reverse layer.
    v = h.copy()
    v[T] = h[T] - lr_target * g_T
    for s in range(B):
        for t in range(T, 1, -1):
            v[t - 1, s] = h[t - 1, s] - g(h[t, s], s, t) + g(v[t, s], s, t)

    # The surrogate Σ_t ½‖h_t − v_t‖² / B, through time or locally.
    gW, gU, gb = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    for s in range(B):
        delta_next = None
        for t in range(T, 0, -1):
            e = (h[t, s] - v[t, s]) / B
            if tp_grad == "through-time" and delta_next is not None:
                e = e + W.T @ delta_next
            delta = (1 - h[t, s] ** 2) * e
            gW += np.outer(delta, h[t - 1, s])
            gU += np.outer(delta, x[s, t - 1])
            gb += delta
            delta_next = delta
    grads["rnn.w_hh"], grads["rnn.w_ih"], grads["rnn.b_ih"], grads["rnn.b_hh"] = gW, gU, gb, gb

    out = {"h": h, "loss": np.array([value]), "v": v}
    out.update({"grad." + k: val for k, val in grads.items()})
    return out


if __name__ == "__main__":
    main()
