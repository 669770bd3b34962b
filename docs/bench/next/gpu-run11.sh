#!/usr/bin/env bash
# Prepared for the next GPU call (not yet run): the state of the build after "W in
# registers" where that section did not look. Copy the release binary (stripped, gzipped)
# to .bin/tpri.gz with torch_baseline.py, this script as .bin/gpu-bench.sh, and run
# `bash .bin/gpu-bench.sh` from the working tree's root with .gl/ beside it.
# - lanes per unit over d past the register path's reach (d > 135: 2 and 4 lanes);
# - the GRU at the paper's size, which gained only the loop-bounding change (its first
#   H200 rows: TP-RI 12.45 ms, BPTT 7.37 ms, 1-first/gru-784.json);
# - f16 storage with the register path, and its check;
# - cuDNN in the same call.
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 60 .bin/tpri check
step 60 .bin/tpri check --storage f16
step 90 .bin/tpri bench --backend gpu --steps 784 --hidden 100,128,192,256 --batch 16 --reps 10 --lanes-per-unit 1,2,4 --json "$OUT/lanes.json"
step 60 .bin/tpri bench --backend gpu --cell gru --steps 784 --hidden 100 --batch 16 --reps 10 --json "$OUT/gru-784.json"
step 60 .bin/tpri bench --backend gpu --steps 784 --hidden 100,256 --batch 16,256 --reps 10 --storage f32,f16 --json "$OUT/f16.json"
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
grep -E "^(gpu  .*784 |==|all )" "$log" | tail -c 11000
