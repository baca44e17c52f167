#!/bin/bash
# Runs on the GPU machine (bundle.sh says how it gets there): unpacks the
# Vulkan libraries and the bundle, then `bench:gpu` on BENCH_GPU_PROVIDER
# (webgpu unless set: the CUDA add-on cannot reach that machine). What the
# benches write is copied to $OUT.
set -o pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
tar xJf .devbundle/rt.tar.xz || { echo "the bundle did not unpack: run bench/gpu-device/bundle.sh first"; exit 3; }
export PATH=$PWD/node_modules/node/bin:$PATH
icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json /usr/share/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
echo "node $(node -v), $(nproc) cores, Vulkan ICD ${icd:-none}"
export BENCH_GPU_PROVIDER=${BENCH_GPU_PROVIDER:-webgpu} BENCH_GPU_PREFLIGHT_SECONDS=${BENCH_GPU_PREFLIGHT_SECONDS:-60} BENCH_GPU_STEP_SECONDS=${BENCH_GPU_STEP_SECONDS:-120}
node bench/gpu.ts 2>&1 | tee "${OUT:-/tmp}/gpu.log" | grep -v 'signing\|warming\|measuring'
rc=$?
cp bench/results/gpu-*.json "${OUT:-/tmp}/" 2>/dev/null
exit $rc
