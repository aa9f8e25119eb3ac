#!/usr/bin/env bash
# Packs what scripts/device-webgpu.sh needs from node_modules into .device/node_modules.tar.xz (linux-x64
# only: tsx + esbuild, webgpu without the other platforms' Dawn builds), small enough to carry.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
tar -cJf .device/node_modules.tar.xz \
  --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' \
  --exclude='node_modules/webgpu/dist/linux-arm64' \
  node_modules/tsx node_modules/esbuild node_modules/@esbuild/linux-x64 node_modules/webgpu node_modules/@webgpu \
  node_modules/debug node_modules/ms node_modules/.bin/tsx
ls -l .device/node_modules.tar.xz
