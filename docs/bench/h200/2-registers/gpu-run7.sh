#!/usr/bin/env bash
# Seventh measurement: the time loops' per-step latency. Three builds of the same tree:
# tpri-a (7d008e7, as measured in 1-first/), tpri-b (shader modules without naga's forced
# loop bounding) and tpri (b, and the tanh RNN's time loops keeping their column of W, or
# of Pᵀ and W, in registers: include/dot.wgsl's REG_BLOCKS). Two rounds in opposite orders,
# phase by phase over d at T = 784, and cuDNN in the same call for the ratio. At most eight
# files come back from a call: log.txt, six grids and torch-784.json. The binaries travel
# gzipped (the working tree a call carries is limited to 64 MiB).
set -u
for b in tpri tpri-a tpri-b; do gunzip -f .bin/$b.gz; chmod +x .bin/$b; done
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
icd=$(timeout 20 find /usr /etc -name 'nvidia_icd*.json' 2>/dev/null | head -1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
log=$OUT/log.txt
step() { local t=$1; shift; echo "== $* (limit ${t}s)" >>"$log"; local s=$SECONDS
  timeout "$t" "$@" >>"$log" 2>&1; echo "== rc=$? in $((SECONDS - s)) s" >>"$log"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
step 30 .bin/tpri devices
step 120 .bin/tpri check
grid() { step 90 .bin/$1 bench --backend gpu --steps 784 --hidden 8,32,100,256 --batch 16,256 --reps 10 --json "$OUT/$2.json"; }
grid tpri-a a-r1; grid tpri-b b-r1; grid tpri c-r1
grid tpri c-r2; grid tpri-b b-r2; grid tpri-a a-r2
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
grep -E "^(gpu|==)" "$log" | tail -c 11000
