"""The published language model's first TP-RI target sweep, recomputed in NumPy.

Follows `RNNText.target_prop` (diff_mode='linearized', reverse_mode 'optim') and
`run_optimizer.py` of the published code (vroulet/tpri, commit c7e7c10) line by line, at
the published Penn Treebank setting (exp/paper_conv_plots.py `penn_tree`): B = 512,
T = 64, embedding 1024 (frozen, N(0, 1) as nn.Embedding draws it), d = 256, 10 000 words,
lr_target = 1e-3, reg = 1, tol_inv = 1e-3, weights by the code's `rand_orth`, zero biases.
Tokens are drawn uniformly: the frozen table makes every token an N(0, 1) vector, so the
growth of the targets does not depend on which words they are.

Runs it in float32 (PyTorch's default, what the published run computes) and float64, and
prints ||v_t - h_t|| (the target displacement, summed over the batch) at every step back,
the step where float32 first overflows, and the norm of the surrogate's gradient in W.

    python3 published_targets.py [--batch 512] [--seed 0]
"""
import argparse

import numpy as np


def rand_orth(rng, shape, dtype):
    # init_params: rand_orth(shape, sqrt(6 / sum(shape))); the scale drops out of U V^T.
    irange = np.sqrt(6.0 / sum(shape))
    a = rng.uniform(-irange, irange, size=shape)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    return (u @ vt).astype(dtype)


def run(dtype, args):
    rng = np.random.default_rng(args.seed)
    B, T, e, d, V = args.batch, args.seq_len, args.embedding, args.hidden, args.vocab
    emb = rng.standard_normal((V, e)).astype(dtype)
    w_ih = rand_orth(rng, (d, e), dtype)
    w_hh = rand_orth(rng, (d, d), dtype)
    w_out = rand_orth(rng, (V, d), dtype)
    tokens = rng.integers(0, V, size=(B, T + 1))
    inputs, labels = tokens[:, :T], tokens[:, 1:]

    # net.rep: h_0 = 0 prepended; biases are zero at initialisation.
    hiddens = np.zeros((B, T + 1, d), dtype)
    for t in range(T):
        hiddens[:, t + 1] = np.tanh(emb[inputs[:, t]] @ w_ih.T + hiddens[:, t] @ w_hh.T)

    # run_optimizer: targets = seq_h - lr_target * seq_h.grad, the gradient of the mean
    # cross-entropy over all B*T predictions with respect to each h_t.
    targets = np.empty((B, T, d), dtype)
    for t in range(T):
        z = hiddens[:, t + 1] @ w_out.T
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(B), labels[:, t]] -= 1
        grad = (p / (B * T)).astype(dtype) @ w_out
        targets[:, t] = hiddens[:, t + 1] - dtype(args.lr_target) * grad

    # update_reverse (reverse_mode 'optim'): Cholesky factor of W_hh^T W_hh + reg I.
    chol = np.linalg.cholesky(w_hh.T @ w_hh + dtype(args.reg) * np.eye(d, dtype=dtype))

    def jac_reverse_layer(hidden, direction):
        c = np.clip(hidden, -1 + args.tol_inv, 1 - args.tol_inv)
        direction = direction / (1 - c**2)
        rhs = (direction @ w_hh).T  # F.linear(dir, W_hh^T)
        y = np.linalg.solve(chol, rhs)
        return np.linalg.solve(chol.T, y).T  # cholesky_solve

    target = targets[:, -1]
    disp = {}
    carried = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(T - 1, -1, -1):
            disp[i + 1] = float(np.linalg.norm((hiddens[:, i + 1] - target).astype(np.float64)))
            carried[i + 1] = target.copy()
            if i > 0:
                jac_vec = jac_reverse_layer(
                    hiddens[:, i + 1], target + targets[:, i] - 2 * hiddens[:, i + 1]
                )
                target = hiddens[:, i] + jac_vec

        # The surrogate's gradient in W_hh, through time, with the targets detached:
        # out = sum_t 1/2 ||h_t - v_t||^2 (no division by B in the 'optim' mode).
        err = np.zeros((B, d), dtype)
        grad_w = np.zeros((d, d), np.float64)
        for t in range(T, 0, -1):
            err = err + (hiddens[:, t] - carried[t])
            delta = (1 - hiddens[:, t] ** 2) * err
            grad_w += (delta.T @ hiddens[:, t - 1]).astype(np.float64)
            err = delta @ w_hh
    return disp, float(np.linalg.norm(grad_w))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--embedding", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--lr-target", type=float, default=1e-3)
    ap.add_argument("--reg", type=float, default=1.0)
    ap.add_argument("--tol-inv", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"setting: {vars(args)}")
    results = {name: run(dtype, args) for name, dtype in (("float32", np.float32), ("float64", np.float64))}
    print(f"{'t':>4} {'float32 ||v_t - h_t||':>24} {'float64 ||v_t - h_t||':>24}")
    for t in range(args.seq_len, 0, -1):
        print(f"{t:>4} {results['float32'][0][t]:>24.4e} {results['float64'][0][t]:>24.4e}")
    for name, (disp, gw) in results.items():
        bad = [t for t in sorted(disp, reverse=True) if not np.isfinite(disp[t])]
        first = f"first non-finite at t = {bad[0]}" if bad else "finite at every step"
        print(f"{name}: {first}; ||grad W_hh|| = {gw:.4e}")


if __name__ == "__main__":
    main()
