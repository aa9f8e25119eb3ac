#!/usr/bin/env bash
# Runs seekd's WebGPU tests (and the webgpu bench) on a real GPU through Dawn's Vulkan backend, on a
# Linux x86-64 machine with an NVIDIA GPU and no Node installed. Run from anywhere; logs go to $OUT.
#
# Carried into the repo root (all git-ignored):
#   .node/node.xz   a Node 20 linux-x64 binary, xz-compressed (`xz -9 < $(command -v node) > .node/node.xz`)
#   .gl/*.deb       the Vulkan loader (libvulkan1) and whatever ICD packages the machine lacks
#   node_modules/   or .device/node_modules.tar.xz (scripts/pack-device-webgpu.sh makes a trimmed one)
#
# Env: SEEKD_WEBGPU_BACKEND=vulkan (default here) | opengles; feature level is 'core' for vulkan.
#      SKIP_BENCH=1 skips the bench.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/.device/out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device-webgpu.log") 2>&1
echo "== seekd device-webgpu $(date -u +%FT%TZ) on $(uname -a)"

# 1. Node from the carried binary.
BIN="$(mktemp -d)"
if command -v xz >/dev/null 2>&1; then
  xz -dc .node/node.xz > "$BIN/node"
else
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' .node/node.xz "$BIN/node"
fi
chmod +x "$BIN/node"
export PATH="$BIN:$PATH"
node --version || { echo "carried node does not run"; exit 3; }

# 2. Vulkan loader / ICDs from the carried packages.
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
{ nvidia-smi || true; echo; ls -l /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1 || true; ldconfig -p | grep -i vulkan || true; } > "$OUT/gpu-env.txt" 2>&1

# 3. Dependencies.
if [ ! -d node_modules ] && [ -f .device/node_modules.tar.xz ]; then
  tar -xJf .device/node_modules.tar.xz
fi
[ -d node_modules/webgpu ] || { echo "node_modules (with webgpu and tsx) is missing"; exit 3; }

export SEEKD_WEBGPU_BACKEND="${SEEKD_WEBGPU_BACKEND:-vulkan}"
echo "== backend $SEEKD_WEBGPU_BACKEND"
node --import tsx scripts/webgpu-info.ts > "$OUT/adapter.json" 2> "$OUT/adapter.err"
info_rc=$?
cat "$OUT/adapter.json" "$OUT/adapter.err"
if [ $info_rc -ne 0 ]; then echo "no WebGPU device (rc $info_rc)"; exit 4; fi

# 4. The Dawn WebGPU tests (the files CI runs on llvmpipe; browser.test.ts needs Chromium, not run here),
#    then the bench.
start=$(date +%s)
node scripts/test.mjs webgpu/ops.test webgpu/deepgemm.test webgpu/flashmla.test 2>&1 | tee "$OUT/webgpu-tests.log"
rc=${PIPESTATUS[0]}
echo "== tests rc=$rc in $(( $(date +%s) - start )) s"
if [ "${SKIP_BENCH:-0}" != 1 ] && [ -f bench/webgpu.ts ]; then
  node --import tsx bench/run.ts webgpu --json --full > "$OUT/bench-webgpu.json" 2> "$OUT/bench-webgpu.err"
  echo "== bench rc=$?"; cat "$OUT/bench-webgpu.json"
fi
exit $rc
