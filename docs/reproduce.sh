#!/usr/bin/env bash
# Regenerates every number and figure of docs/REPRODUCTION.md (CPU reference backend).
# Usage: bash docs/reproduce.sh OUT_DIR [TPRI_BINARY]
set -uo pipefail
out=${1:?usage: reproduce.sh OUT_DIR [TPRI_BINARY]}
tpri=${2:-target/release/tpri}
"$tpri" compare adding-30-tp adding-30-bp --iterations 3000 --seed 0 --backend cpu --out "$out/adding-30"
"$tpri" compare temporal-order-60-tp temporal-order-60-bp --iterations 3000 --seed 0 --backend cpu --out "$out/temporal-order-60"
"$tpri" compare temporal-order-120-tp temporal-order-120-bp --iterations 2000 --seed 0 --backend cpu --out "$out/temporal-order-120"
# The regularization study: r → 0 (1e-6 stands for 0, which the inversion cannot take),
# with the exact Cholesky solve so that CG convergence does not enter the picture.
"$tpri" compare temporal-order-60-tp --vary reg=1e-6,0.1,1,10 --iterations 2000 --seed 0 --backend cpu \
    --out "$out/regularization" -- --solver cholesky
# The GRU on pixel-by-pixel Fashion-MNIST (T = 784; Debian's dataset-fashion-mnist), TP-RI with
# the jacobian inversion against BPTT: about 3.5 s (TP) and 2 s (BP) per iteration here.
"$tpri" compare fashion-mnist-gru-tp fashion-mnist-gru-bp --iterations 2000 --seed 0 --backend cpu --out "$out/fashion-mnist-gru"
