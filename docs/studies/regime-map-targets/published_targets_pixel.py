"""The published pixel RNN's first TP-RI target sweep, recomputed in NumPy.

Follows `RNN.target_prop` (diff_mode='linearized', reverse_mode 'optim'), `jac_reverse_layer`
and `run_optimizer.py` of the published code (vroulet/tpri, commit c7e7c10) at the
published regime-map setting (exp/heatmap_perf.py): images in chunks of k pixels per step,
standardized (get_data's default normalize = True), B = 512, r = 1, tol_inv = 1e-3,
weights by the code's `rand_orth`, zero biases, the mean cross-entropy of the last
state's head. Fashion-MNIST stands in for MNIST (its published constants 0.2860, 0.3202).

For each (k, d) and target step γ_h it runs the sweep in float32 (PyTorch's default) and
float64 and prints the largest ‖v_t − h_t‖ over the steps (summed over the batch), the
last step's, and the norm of the surrogate's gradient in W_hh.

    python3 published_targets_pixel.py [--data /usr/share/datasets/fashion-mnist]
"""
import argparse
import gzip

import numpy as np


def rand_orth(rng, shape, dtype):
    irange = np.sqrt(6.0 / sum(shape))
    a = rng.uniform(-irange, irange, size=shape)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    return (u @ vt).astype(dtype)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def sweep(dtype, images, labels, k, d, lr_target, seed, reg=1.0, tol_inv=1e-3):
    rng = np.random.default_rng(seed)
    B = images.shape[0]
    x = ((images.reshape(B, -1) / 255.0 - 0.2860) / 0.3202).astype(dtype).reshape(B, -1, k)
    T = x.shape[1]
    w_ih = rand_orth(rng, (d, k), dtype)
    w_hh = rand_orth(rng, (d, d), dtype)
    w_out = rand_orth(rng, (10, d), dtype)
    h = np.zeros((B, T + 1, d), dtype)
    for t in range(T):
        h[:, t + 1] = np.tanh(x[:, t] @ w_ih.T + h[:, t] @ w_hh.T)
    z = h[:, T] @ w_out.T
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(B), labels] -= 1
    target = h[:, T] - dtype(lr_target) * ((p / B).astype(dtype) @ w_out)
    chol = np.linalg.cholesky(w_hh.T @ w_hh + dtype(reg) * np.eye(d, dtype=dtype))
    disp, carried = {}, {}
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(T - 1, -1, -1):
            disp[i + 1] = float(np.linalg.norm((h[:, i + 1] - target).astype(np.float64)))
            carried[i + 1] = target
            c = np.clip(h[:, i + 1], -1 + tol_inv, 1 - tol_inv)
            rhs = ((target - h[:, i + 1]) / (1 - c**2)) @ w_hh
            jac_vec = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs.T)).T
            target = h[:, i] + jac_vec
        err = np.zeros((B, d), dtype)
        grad_w = np.zeros((d, d), np.float64)
        for t in range(T, 0, -1):
            err = err + (h[:, t] - carried[t])
            delta = (1 - h[:, t] ** 2) * err
            grad_w += (delta.T @ h[:, t - 1]).astype(np.float64)
            err = delta @ w_hh
    return max(disp.values()), disp[T], float(np.linalg.norm(grad_w))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    images = read_idx(f"{args.data}/train-images-idx3-ubyte.gz")[: args.batch]
    labels = read_idx(f"{args.data}/train-labels-idx1-ubyte.gz")[: args.batch].astype(int)
    print("k    T   d   gamma_h | float32: max|v-h|  |v_T-h_T|  |grad W| | float64: max|v-h|  |v_T-h_T|  |grad W|")
    for k, d in [(196, 16), (196, 64), (56, 16), (56, 32), (56, 64), (16, 16), (16, 64), (1, 100)]:
        for gamma in [1.0, 1e-3, 1e-6]:
            row = [sweep(dt, images, labels, k, d, gamma, args.seed) for dt in (np.float32, np.float64)]
            cells = " | ".join(f"{a:10.3e} {b:10.3e} {c:10.3e}" for a, b, c in row)
            print(f"{k:<4} {784 // k:<3} {d:<3} {gamma:<7g} | {cells}")


if __name__ == "__main__":
    main()
