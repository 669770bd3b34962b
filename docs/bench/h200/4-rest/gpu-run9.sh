#!/usr/bin/env bash
# Ninth measurement: the build to commit (tpri: the columns and their last d % 8 terms in
# registers, chosen per pipeline; BPTT's step inputs a step ahead with lanes only) against
# 3-ahead/'s build (tpri-d) and 7d008e7 (tpri-a), cuDNN in the same call, and TP-RI and BPTT
# end to end at the paper's size. At most eight files come back from a call. The binaries
# travel gzipped (the working tree a call carries is limited to 64 MiB).
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 120 .bin/tpri check
grid tpri-a a-r1; grid tpri-d d-r1; grid tpri e-r1
grid tpri e-r2; grid tpri-d d-r2
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
step 90 python3 .bin/torch_baseline.py --T 784 --d 256 --B 256 --reps 5 --out "$OUT/torch-784-256-256.json"
for m in tp bp; do
  step 60 .bin/tpri train --preset adding-30-$m --seq-len 784 --hidden 100 --batch-size 16 --iterations 2000 --eval-every 1000 --backend gpu --run-dir /tmp/e2e-$m
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
grep -E "^(gpu  .*784 +100 +16 |==|done|all )" "$log" | tail -c 11000
