#!/usr/bin/env bash
# The GRU's time loops in workgroups matched to d: the build before (256 invocations,
# `before`) and after, alternating, two rounds, on lavapipe.
#   bash docs/bench/matched-wg/run-gru.sh BEFORE AFTER OUTDIR
before=$1; after=$2; out=$3
for round in 1 2; do
  for which in before after; do
    bin=${!which}
    "$bin" bench --backend gpu --cell gru --steps 100 --hidden 7,33,100 --batch 16 --reps 3 --json "$out/gru-$which-r$round.json" > "$out/gru-$which-r$round.txt" 2>&1
  done
done
