#!/usr/bin/env bash
# Fourth measurement: the session's final build (auto: two lanes where d >= 64 and at most
# 128 workgroups), its self-check, and the GRU end to end (no bench rows exist for it).
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 120 .bin/tpri check
step 60 .bin/tpri bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 20 --json "$OUT/final-784.json"
E="--seq-len 784 --hidden 100 --batch-size 16 --iterations 500 --eval-every 250 --backend gpu --cell gru"
step 90 .bin/tpri train --preset adding-30-tp --inversion per-gate $E --run-dir /tmp/gru-tp
step 60 .bin/tpri train --preset adding-30-bp $E --run-dir /tmp/gru-bp
for r in gru-tp gru-bp; do cp /tmp/$r/log.csv "$OUT/$r-log.csv" 2>/dev/null; done
tail -c 12000 "$log"
