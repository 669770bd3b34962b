#!/usr/bin/env bash
# Seventh measurement: the time loops' per-step latency. Three builds of the same tree:
# tpri-a (7d008e7, as measured in 1-first/), tpri-b (shader modules without naga's forced
# loop bounding) and tpri (b, and the tanh RNN's time loops keeping their column of W, or
# of Pᵀ and W, in registers: include/dot.wgsl's REG_BLOCKS). Two rounds in opposite orders,
# phase by phase over d at T = 784, and cuDNN in the same call for the ratio. At most eight
# files come back from a call: log.txt, six grids and torch-784.json. The binaries travel
# gzipped (the working tree a call carries is limited to 64 MiB).
GRID_HIDDEN=8,32,100,256
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 120 .bin/tpri check
grid tpri-a a-r1; grid tpri-b b-r1; grid tpri c-r1
grid tpri c-r2; grid tpri-b b-r2; grid tpri-a a-r2
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
grep -E "^(gpu|==)" "$log" | tail -c 11000
