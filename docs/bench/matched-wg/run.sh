#!/usr/bin/env bash
# Workgroups matched to d in the tanh RNN's time loops: the build before (256 invocations at
# one lane, `before`) and after, alternating, two rounds, on lavapipe. Medians of --reps;
# the "CPU ms" column (the process's CPU time per iteration) is the robust one on a shared
# machine.
#   bash docs/bench/matched-wg/run.sh BEFORE AFTER OUTDIR
before=$1; after=$2; out=$3
for round in 1 2; do
  for which in before after; do
    bin=${!which}
    "$bin" bench --backend gpu --steps 784 --hidden 100 --batch 16 --reps 3 --json "$out/$which-784-r$round.json" > "$out/$which-784-r$round.txt" 2>&1
    "$bin" bench --backend gpu --steps 200 --hidden 7,33,100,200 --batch 16 --reps 3 --json "$out/$which-200-r$round.json" > "$out/$which-200-r$round.txt" 2>&1
  done
done
