#!/usr/bin/env bash
# Copies what the repository keeps of a finished (or partial) sweep into docs/studies/NAME:
# the spec, results.csv, evaluations.csv and .md, the figures, the manifest, worker logs and exit statuses (so that
# `tpri sweep --collect` on the copy tells failed runs from interrupted ones), and of every run its
# config.toml, log.csv, summary.json and alignment.csv (where it has one) — never checkpoints.
#   bash docs/sweeps/keep.sh OUT/convergence-adding-30
set -euo pipefail
src=${1:?usage: keep.sh SWEEP_DIR}
dst="$(cd "$(dirname "$0")/.." && pwd)/studies/$(basename "$src")"
rm -rf "$dst"
mkdir -p "$dst"
cd "$src"
for f in spec.toml results.csv evaluations.csv evaluations.md search.csv manifest.json figures/* logs/* status/* \
         runs/*/config.toml runs/*/log.csv runs/*/summary.json runs/*/alignment.csv; do
    [ -f "$f" ] || continue
    mkdir -p "$dst/$(dirname "$f")"
    cp "$f" "$dst/$f"
done
du -sh "$dst"
