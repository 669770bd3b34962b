#!/usr/bin/env bash
# Prepared for the next GPU call (not yet run): the step probes, then "Blocks of steps"
# and "Split sums in parallel" (docs/PERFORMANCE.md) against the build before them
# (8459db1), with cuDNN in the same call, and the blocks' size swept in one build
# (`--steps-per-block 1,2,4,8,auto`: 1 is a step at a time); then what the section "W in
# registers" left unmeasured: lanes past the register path's reach (d = 128–256), the GRU
# (no register path; its first H200 rows: TP-RI 12.45 ms, BPTT 7.37 ms,
# h200/1-first/gru-784.json; now with its one backward loop against the two, `--backward
# fused,separate`, and its forward and backward loops with 1, 2 and 4 lanes per unit: BPTT's
# rows run both with lanes, TP-RI's per-gate rows the forward pass) and f16 storage
# with the register path, with its check, and with its one backward loop against the two.
# Here, from the project's root, before the call: `bash docs/bench/next/prepare.sh` (the
# loader into .gl/; the two builds, this script and PyTorch's baseline into .bin/),
# and run `bash .bin/gpu-bench.sh` there with .gl/ and .bin/ beside it. A call returns at
# most eight files: the JSON goes back in one archive, results.tgz, beside log.txt.
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 60 .bin/tpri check
# Two lanes per unit everywhere, the GRU's forward pass included (its lanes are new).
step 60 .bin/tpri check --lanes-per-unit 2
# What a step's ingredients cost (docs/PERFORMANCE.md, "Step probes").
step 30 .bin/tpri bench --backend gpu --steps 8 --hidden 8 --batch 1 --reps 10 --probes --json "$OUT/probes.json"
# The comparison: two rounds a build, in opposite orders.
grid tpri-before before-r1 60; grid tpri blocks-r1 60
grid tpri blocks-r2 60; grid tpri-before before-r2 60
# How a step's time falls with the block's size, one build, side by side.
step 90 .bin/tpri bench --backend gpu --steps 784 --hidden 8,100 --batch 16,256 --reps 10 --steps-per-block 1,2,4,8,auto --json "$OUT/block-sizes.json"
step 40 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
for m in tp bp; do
  step 30 .bin/tpri train --preset adding-30-$m --seq-len 784 --hidden 100 --batch-size 16 --iterations 2000 --eval-every 1000 --backend gpu --run-dir /tmp/e2e-$m
done
# The GRU end to end with its one backward loop (first H200 call: 13.50 ms an iteration).
step 30 .bin/tpri train --preset adding-30-tp --cell gru --inversion per-gate --seq-len 784 --hidden 100 --batch-size 16 --iterations 500 --eval-every 250 --backend gpu --run-dir /tmp/e2e-gru
# What "W in registers" left unmeasured, with the new build.
step 60 .bin/tpri check --storage f16
step 90 .bin/tpri bench --backend gpu --steps 784 --hidden 100,128,192,256 --batch 16 --reps 10 --lanes-per-unit 1,2,4 --json "$OUT/lanes.json"
step 60 .bin/tpri bench --backend gpu --cell gru --steps 784 --hidden 100 --batch 16 --reps 10 --backward fused,separate --lanes-per-unit 1,2,4 --json "$OUT/gru-784.json"
step 60 .bin/tpri bench --backend gpu --steps 784 --hidden 100,256 --batch 16,256 --reps 10 --storage f32,f16 --json "$OUT/f16.json"
# f16 storage's one backward loop against its two ("One backward loop with f16 storage").
step 30 .bin/tpri bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 10 --storage f16 --backward fused,separate --json "$OUT/f16-fused.json"
# The generalized inversion (per-step CG on Jacobian products; the GRU's training default)
# beside each cell's bench inversion: never timed on a GPU.
step 60 .bin/tpri bench --backend gpu --cell tanh,gru --steps 784 --hidden 100 --batch 16 --reps 5 --inversion jacobian,analytic,per-gate --json "$OUT/jacobian.json"
# The same at r = 0.25, where the targets move every step back to t = 1 (at the bench's
# r = 1 only the last few dozen): what the GRU studies' training runs cost ("What the
# jacobian inversion costs in training"; 0.74 s an iteration on one core of the CPU), with
# the per-step CG's Jacobi preconditioner (the default) and without ("A diagonal
# preconditioner for the jacobian inversion's per-step CG").
step 45 .bin/tpri bench --backend gpu --cell gru --steps 784 --hidden 100 --batch 16 --reps 3 --inversion jacobian --reg 0.25 --precondition jacobi,none --json "$OUT/jacobian-r0.25.json"
# Issue 15's "a TP-RI iteration within 2x its floor at (784, 512, 512)": never run on a GPU
# (the grids stopped at B = 256); one and four sequences a workgroup, beside the floors.
step 60 .bin/tpri bench --backend gpu --steps 784 --hidden 512 --batch 512 --reps 5 --sequences-per-workgroup 1,4 --json "$OUT/big.json"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
(cd "$OUT" && tar czf results.tgz ./*.json && rm -f ./*.json)
grep -E "^(gpu  .*784 +100 +16 |==|done|all )" "$log" | tail -c 11000
