# The set-up the device scripts under docs/bench/h100/ and h200/ start with, sourced from
# the root of the working tree on the GPU machine, with .gl/ (the Vulkan loader's Debian
# packages) and .bin/ (the binaries, torch_baseline.py and the script) beside it. It unpacks the binaries
# that travel gzipped (a call carries at most 64 MiB) and the loader, points the loader at
# the NVIDIA driver, logs the card, and defines `step LIMIT CMD...` (CMD under a time limit,
# its output, exit code and time into $OUT/log.txt, so that a hang costs one step) and
# `grid BUILD NAME [LIMIT]` (`tpri bench` of .bin/BUILD over d at T = 784, B ∈ {16, 256},
# into $OUT/NAME.json). The scripts ran with these lines inline; they source them since.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for z in .bin/*.gz; do [ -e "$z" ] || continue; gunzip -f "$z"; chmod +x "${z%.gz}"; done
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
icd=$(timeout 20 find /usr /etc -name 'nvidia_icd*.json' 2>/dev/null | head -1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
log=$OUT/log.txt
step() { local t=$1; shift; echo "== $* (limit ${t}s)" >>"$log"; local s=$SECONDS
  timeout "$t" "$@" >>"$log" 2>&1; echo "== rc=$? in $((SECONDS - s)) s" >>"$log"; }
grid() { step "${3:-90}" ".bin/$1" bench --backend gpu --steps 784 --hidden "${GRID_HIDDEN:-8,32,64,100,128,256}" \
  --batch 16,256 --reps 10 --json "$OUT/$2.json"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv >>"$log" 2>&1
