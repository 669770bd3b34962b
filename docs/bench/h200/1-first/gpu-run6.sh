#!/usr/bin/env bash
# Sixth measurement (prepared without a GPU, to run when one is lent): TP-RI's backward pass
# in one loop (`--backward fused`, sweep_bptt.wgsl) against the two loops, BPTT without its
# per-step round trip through global memory and the GRU's one-barrier steps, against the
# build before them (ace27cc, stripped and copied to .bin/tpri-before). cuDNN in the same
# call for the ratio.
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 120 .bin/tpri check
step 60 .bin/tpri bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 20 --backward fused,separate --json "$OUT/fused-784.json"
step 60 .bin/tpri-before bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 20 --json "$OUT/before-784.json"
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
step 150 .bin/tpri bench --backend gpu --steps 784 --hidden 8,32,100,256 --batch 16,256 --reps 5 --backward fused,separate --json "$OUT/fused-grid.json"
# The GRU's phases (bench rows since --cell), then per-gate TP-RI and BPTT end to end, before
# and after its one-barrier steps (the build before has no --cell).
step 40 .bin/tpri bench --backend gpu --cell gru --steps 784 --hidden 100 --batch 16 --reps 10 --json "$OUT/gru-784.json"
for b in tpri tpri-before; do
  step 40 .bin/$b train --preset adding-30-tp --cell gru --inversion per-gate --seq-len 784 --hidden 100 --batch-size 16 --iterations 500 --eval-every 250 --backend gpu --run-dir /tmp/gru-tp-$b
  step 40 .bin/$b train --preset adding-30-bp --cell gru --seq-len 784 --hidden 100 --batch-size 16 --iterations 500 --eval-every 250 --backend gpu --run-dir /tmp/gru-bp-$b
  cp /tmp/gru-tp-$b/log.csv "$OUT/gru-tp-$b-log.csv" 2>/dev/null; cp /tmp/gru-bp-$b/log.csv "$OUT/gru-bp-$b-log.csv" 2>/dev/null
done
tail -c 12000 "$log"
