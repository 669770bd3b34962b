#!/usr/bin/env bash
# Finds the NVIDIA Vulkan driver (ICD) and its libraries, records what it found, then runs
# the prepared measurement with that environment.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; d=$OUT/diag.txt
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
srch() { timeout 20 find /usr /etc /opt /lib /lib64 "$@" 2>/dev/null; }
{
  echo "== icd files"; srch -name '*icd*.json'
  echo "== /usr/local/nvidia"; ls -la /usr/local/nvidia /usr/local/nvidia/* 2>&1 | head -60
  echo "== ldconfig"; ldconfig -p | grep -i -E 'vulkan|GLX_nvidia|glcore|gpucomp|nvidia' | head -40
  echo "== libGLX_nvidia"; srch -name 'libGLX_nvidia.so*'
} >>"$d" 2>&1
for l in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$l" ] && export LD_LIBRARY_PATH=$l:${LD_LIBRARY_PATH:-}
done
icd=$(srch -name 'nvidia_icd*.json' | head -1)
if [ -z "$icd" ]; then
  lib=$(srch -name 'libGLX_nvidia.so.0' | head -1)
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "${lib:-libGLX_nvidia.so.0}" >/tmp/nvidia_icd.json
  icd=/tmp/nvidia_icd.json
fi
export VK_DRIVER_FILES=$icd
{ echo "== ldd"; ldd /usr/local/nvidia/lib64/libGLX_nvidia.so.0 /usr/lib/libGLX_nvidia.so.0; ls -la /usr/lib/libGLX_nvidia.so.0 /usr/local/nvidia/lib64/libnvidia-glcore* /usr/local/nvidia/lib64/libnvidia-eglcore*; } >>"$d" 2>&1
{ echo "== icd=$icd LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; cat "$icd"; } >>"$d" 2>&1
VK_LOADER_DEBUG=error,warn timeout 30 .bin/tpri devices 2>&1 | head -c 30000 >>"$d"
# the standard script sets VK_DRIVER_FILES only where its usual path exists
sed -i 's#^if \[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \]#if false#' .bin/gpu-bench.sh
bash .bin/gpu-bench.sh
