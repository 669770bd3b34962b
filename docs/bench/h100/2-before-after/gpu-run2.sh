#!/usr/bin/env bash
# Second measurement of the session: the build before (tpri-old, commit 4079ecb) against
# the build after (tpri: reductions split over 1024 workgroups, one sequence per
# workgroup by default, lanes per unit), alternating on the same GPU, PyTorch beside.
. docs/bench/gpu-env.sh
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}" >>"$log"
step 30 .bin/tpri devices
step 120 .bin/tpri check
P="--backend gpu --steps 784 --hidden 100 --batch 16 --reps 20"
G="--backend gpu --steps 784 --hidden 100,256,512 --batch 16,256 --reps 5"
step 60 .bin/tpri-old bench $P --sequences-per-workgroup 1 --json "$OUT/old-784.json"
step 60 .bin/tpri bench $P --lanes-per-unit 1,2,4,8,auto --json "$OUT/new-784.json"
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
step 150 .bin/tpri-old bench $G --sequences-per-workgroup 1 --json "$OUT/old-grid.json"
step 150 .bin/tpri bench $G --lanes-per-unit 1,auto --json "$OUT/new-grid.json"
# end to end, as a user trains: host overhead, evaluation and logging included
E="--seq-len 784 --hidden 100 --batch-size 16 --iterations 2000 --eval-every 1000 --backend gpu"
step 60 .bin/tpri train --preset adding-30-tp $E --run-dir /tmp/e2e-tp
step 60 .bin/tpri train --preset adding-30-bp $E --run-dir /tmp/e2e-bp
tail -c 12000 "$log"
