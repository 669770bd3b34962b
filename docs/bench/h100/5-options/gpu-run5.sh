#!/usr/bin/env bash
# Fifth measurement: options already built but never timed on a real GPU: bounded segments
# against one launch per loop, and f16 storage of the histories.
. docs/bench/gpu-env.sh
step 30 .bin/tpri devices
step 60 .bin/tpri bench --backend gpu --steps 784,3136 --hidden 100 --batch 16 --reps 10 --steps-per-dispatch auto,100000 --json "$OUT/segments.json"
step 90 .bin/tpri bench --backend gpu --steps 784 --hidden 100,512 --batch 16,256 --reps 5 --storage f32,f16 --json "$OUT/f16.json"
step 60 .bin/tpri check --storage f16
tail -c 12000 "$log"
