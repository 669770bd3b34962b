#!/usr/bin/env bash
# The paper-length studies of docs/REPRODUCTION.md, one after another, each resumable:
# run it again after an interruption and every sweep continues where it stopped.
#   nohup bash docs/sweeps/studies.sh OUT > OUT.log 2>&1 &
# OUT gets one sweep directory per study (run directories with checkpoints: keep them out of
# git; docs/REPRODUCTION.md keeps their results.csv, summaries, logs and figures).
set -euo pipefail
out=${1:?usage: studies.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
tpri=${TPRI:-tpri}
# A sweep with failed runs (diverged, say) exits non-zero once it has written its results;
# the studies after it still run.
for study in convergence-gru convergence-pixel convergence-pixel-permuted-bp \
             convergence-adding-30 convergence-temporal-order-60 convergence-temporal-order-120 \
             temporal-order-60-ablation regularization-lr regime-map-cpu; do
    resume=()
    if [ -d "$out/$study" ]; then
        resume=(--resume)
    fi
    "$tpri" sweep "$here/$study.toml" --out "$out/$study" "${resume[@]}" --jobs 1 ||
        echo "studies.sh: $study ended with failed runs (see $out/$study/results.csv); going on" >&2
done
