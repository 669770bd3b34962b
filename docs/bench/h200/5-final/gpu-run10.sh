#!/usr/bin/env bash
# Tenth measurement: the build committed (tpri: forward.wgsl with its column and its last
# d % 8 terms in registers, bptt.wgsl and sweep_bptt.wgsl with their columns only) against
# 3-ahead/'s build (tpri-d), cuDNN in the same call, and TP-RI and BPTT end to end at the
# paper's size. The binaries travel gzipped.
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 60 .bin/tpri check
grid tpri f-r1 60; grid tpri-d d-r1 60; grid tpri f-r2 60
step 40 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
for m in tp bp; do
  step 30 .bin/tpri train --preset adding-30-$m --seq-len 784 --hidden 100 --batch-size 16 --iterations 2000 --eval-every 1000 --backend gpu --run-dir /tmp/e2e-$m
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
grep -E "^(gpu  .*784 +100 +16 |==|done|all )" "$log" | tail -c 11000
