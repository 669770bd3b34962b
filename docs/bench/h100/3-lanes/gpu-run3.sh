#!/usr/bin/env bash
# Third measurement: the automatic lane count (two lanes below 64 workgroups), the fixed
# cost of a time step (d = 8, 32), and where two lanes stop paying (B = 16, 64, 128).
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 120 .bin/tpri check
step 60 .bin/tpri bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 20 --lanes-per-unit 1,2,auto --json "$OUT/lanes-784.json"
step 150 .bin/tpri bench --backend gpu --steps 784 --hidden 8,32,100,256,512 --batch 16,64,128 --reps 5 --lanes-per-unit 1,2 --json "$OUT/lanes-grid.json"
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
step 60 .bin/tpri train --preset adding-30-tp --seq-len 784 --hidden 100 --batch-size 16 --iterations 2000 --eval-every 1000 --backend gpu --run-dir /tmp/e2e-tp
cp /tmp/e2e-tp/log.csv "$OUT/e2e-tp-log.csv" 2>/dev/null
tail -c 12000 "$log"
