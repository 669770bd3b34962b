#!/usr/bin/env bash
# Eighth measurement: three builds of the same tree: tpri-a (7d008e7, as in 1-first/),
# tpri-c (2-registers/'s `tpri`: columns in registers wherever they fit, decided in the
# shader) and tpri (the `REGISTERS` override chosen per pipeline by Packing::registers, and
# the loads each step needs from global memory issued one step ahead). Two rounds in
# opposite orders over d at T = 784, cuDNN in the same call. At most eight files come back
# from a call: log.txt, six grids and torch-784.json. The binaries travel gzipped (the
# working tree a call carries is limited to 64 MiB).
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 120 .bin/tpri check
grid tpri-a a-r1; grid tpri-c c-r1; grid tpri d-r1
grid tpri d-r2; grid tpri-c c-r2; grid tpri-a a-r2
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
grep -E "^(gpu  .*784 |==)" "$log" | tail -c 11000
