#!/usr/bin/env bash
# Prepares, here, what the next GPU call (gpu-run12.sh) carries: the Vulkan loader's
# Debian package in .gl/, and in .bin/ the release binaries of this checkout and of the
# build before "Blocks of steps" and "Split sums in parallel" (8459db1), stripped and
# gzipped (a call carries at most 64 MiB), the script itself and PyTorch's baseline.
# Both folders are git-ignored. Then make the one call: `carry: [".gl", ".bin"]`,
# `timeout_s: 560`, command `bash .bin/gpu-bench.sh`. About 8 minutes on 2 cores.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
before=${BEFORE:-8459db1}
baseline=${TORCH_BASELINE:-../shared/device/torch_baseline.py}

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" .gl .bin
for d in /.gl/ /.bin/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"; done

if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  lists=$(mktemp -d)
  mkdir -p "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  apt-get "${o[@]}" update -qq
  (cd .gl && apt-get "${o[@]}" download libvulkan1)
fi

# `pack BINARY NAME`: stripped and gzipped into .bin/NAME.gz.
pack() { strip -o ".bin/$2" "$1" && gzip -9 -f ".bin/$2"; }

cargo build --release --locked
pack target/release/tpri tpri

tree=${TMPDIR:-/tmp}/tpri-before-$before
[ -d "$tree" ] || git worktree add --detach "$tree" "$before"
(cd "$tree" && CARGO_TARGET_DIR="$tree/target" cargo build --release --locked)
pack "$tree/target/release/tpri" tpri-before

cp docs/bench/next/gpu-run12.sh .bin/gpu-bench.sh
cp "$baseline" .bin/torch_baseline.py
ls -l .gl .bin
echo "carried: $(du -cb .gl .bin | tail -1 | cut -f1) bytes of at most $((64 << 20))"
