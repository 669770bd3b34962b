"""Compares `tpri trace` of two builds over a matrix of problems: both cells, every
inversion, target mode, gradient mode and solver, both losses, TP and BP, at three sizes
(one with T = 1). For a refactor that must not change results.

Usage: compare_builds.py OLD_TPRI NEW_TPRI BACKEND [TOL]

BACKEND is passed as `--backend` (cpu or gpu). With TOL = 0 (the default) every tensor
must be bitwise equal and the metadata equal as a map (safetensors writes metadata in hash
order, so the files' bytes differ between any two runs); otherwise each tensor's
‖new − old‖ / ‖old‖ must be ≤ TOL. A case that either build refuses is listed; the two
must refuse the same cases. Exits non-zero on any difference.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

SIZES = {"a": (5, 9, 3, 17, 4), "b": (3, 1, 2, 7, 3), "c": (16, 40, 1, 33, 10)}  # B, T, p, d, q
TANH_TP = [
    ["--inversion", "analytic", "--target-mode", "linearized"],
    ["--inversion", "analytic", "--target-mode", "difference"],
    ["--inversion", "analytic", "--target-mode", "plain"],
    ["--inversion", "analytic", "--solver", "per-step"],
    ["--inversion", "analytic", "--solver", "cholesky"],
    ["--inversion", "jacobian"],
    ["--inversion", "analytic", "--tp-grad", "local"],
]
GRU_TP = [["--inversion", "jacobian"], ["--inversion", "jacobian", "--tp-grad", "local"]]


def inputs(directory):
    rng = np.random.default_rng(7)
    u = lambda lo, hi, shape: rng.uniform(lo, hi, shape)
    for name, (b, t, p, d, q) in SIZES.items():
        s = 1 / np.sqrt(d)
        head = {"head.w": u(-1, 1, (q, d)), "head.b": u(-0.1, 0.1, (q,))}
        save_file({"rnn.w_hh": u(-1, 1, (d, d)) * s, "rnn.w_ih": u(-1, 1, (d, p)),
                   "rnn.b": u(-0.1, 0.1, (d,)), **head}, f"{directory}/tanh_{name}.safetensors")
        save_file({"gru.w_hh": u(-s, s, (3 * d, d)), "gru.w_ih": u(-s, s, (3 * d, p)),
                   "gru.b_ih": u(-s, s, (3 * d,)), "gru.b_hh": u(-s, s, (3 * d,)), **head},
                  f"{directory}/gru_{name}.safetensors")
        x = u(-1, 1, (b, t, p))
        save_file({"x": x, "y": rng.integers(0, q, (b,)).astype(np.int64)},
                  f"{directory}/ce_{name}.safetensors")
        save_file({"x": x, "y": u(-1, 1, (b, q))}, f"{directory}/mse_{name}.safetensors")


def cases():
    for size in SIZES:
        for cell, tp in (("tanh", TANH_TP), ("gru", GRU_TP)):
            for loss in ("ce", "mse"):
                for flags in tp:
                    yield size, cell, loss, "tp", flags
                yield size, cell, loss, "bp", []


def metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n)).get("__metadata__", {})
    meta.pop("backend", None)
    return meta


def main():
    old, new, backend = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    work = tempfile.mkdtemp(prefix="tpri-compare-")
    inputs(work)
    bad, refused, compared, worst = 0, [], 0, 0.0
    for i, (size, cell, loss, method, flags) in enumerate(cases()):
        what = f"{cell} {size} {loss} {method} {' '.join(flags)}"
        outs = []
        for tag, binary in (("old", old), ("new", new)):
            out = f"{work}/{tag}_{i}.safetensors"
            r = subprocess.run([binary, "trace", "--params", f"{work}/{cell}_{size}.safetensors",
                                "--batch", f"{work}/{loss}_{size}.safetensors", "--loss", loss,
                                "--method", method, *flags, "--backend", backend, "--out", out],
                               capture_output=True, text=True)
            outs.append(out if r.returncode == 0 else None)
        if outs == [None, None]:
            refused.append(what)
            continue
        if None in outs:
            print(f"only one build runs {what}: old {outs[0] is not None}, new {outs[1] is not None}")
            bad += 1
            continue
        a, b = load_file(outs[0]), load_file(outs[1])
        if set(a) != set(b):
            print(f"{what}: tensors differ: {sorted(set(a) ^ set(b))}")
            bad += 1
        for k in sorted(set(a) & set(b)):
            if tol == 0.0:
                if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k]):
                    print(f"{what}: {k} not bitwise equal")
                    bad += 1
            else:
                ref = np.linalg.norm(a[k])
                err = np.linalg.norm(b[k] - a[k]) / ref if ref > 0 else np.linalg.norm(b[k])
                worst = max(worst, err)
                if not err <= tol:
                    print(f"{what}: {k} relative difference {err:.3e}")
                    bad += 1
        if tol == 0.0 and set(a) == set(b) and metadata(outs[0]) != metadata(outs[1]):
            print(f"{what}: metadata differs")
            bad += 1
        compared += 1
    for what in refused:
        print(f"refused by both: {what}")
    print(f"{compared} cases compared, {len(refused)} refused by both, {bad} differences"
          + (f", worst relative difference {worst:.3e}" if tol else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
