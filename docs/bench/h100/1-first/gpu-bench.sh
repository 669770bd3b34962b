#!/usr/bin/env bash
# One prepared measurement on an NVIDIA GPU machine (see ../DEVICE.md). Copy this file and
# torch_baseline.py into .bin/ beside the release binary; on the GPU machine run
#   bash .bin/gpu-bench.sh
# Everything it measures lands in $OUT (six files). Each step has its own
# time limit, so one hang costs one step, not the run.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
log=$OUT/log.txt
step() { local t=$1; shift; echo "== $* (limit ${t}s)" >>"$log"; local s=$SECONDS
  timeout "$t" "$@" >>"$log" 2>&1; echo "== rc=$? in $((SECONDS - s)) s" >>"$log"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
step 30 .bin/tpri devices
# correctness on real hardware first: every quantity against the f64 reference
step 120 .bin/tpri check
# the paper's pixel size, then a wider, a longer and a larger-batch point
step 120 .bin/tpri bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 20 --json "$OUT/gpu-784.json"
step 150 .bin/tpri bench --backend gpu --steps 784,3136 --hidden 100,256 --batch 16,256 --reps 5 --json "$OUT/gpu-grid.json"
# the same shapes in PyTorch on the same GPU: cuDNN BPTT and the published TP structure
step 60 python3 .bin/torch_baseline.py --T 784 --d 100 --B 16 --reps 20 --out "$OUT/torch-784.json"
step 90 python3 .bin/torch_baseline.py --T 784 --d 256 --B 256 --reps 5 --out "$OUT/torch-784-256-256.json"
# sequences per workgroup (issue #15): one per workgroup against the adapter's choice
step 90 .bin/tpri bench --backend gpu --steps 784 --hidden 100,512 --batch 256 --reps 5 --sequences-per-workgroup 1,auto --json "$OUT/gpu-spw.json"
tail -c 20000 "$log"
