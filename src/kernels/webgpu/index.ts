// The WebGPU (WGSL) backend: asynchronous forward ops, DeepGEMM and FlashMLA on one lazily opened
// device. The model runs on the synchronous `ref` / `wasm` backends of the kernel registry for now; this
// is the GPU path's op set, tested against the same contracts (see ops.ts, deepgemm.ts, flashmla.ts).
export { loadWebGpuBackend, type AsyncKernelOps, type WebGpuBackend } from './ops.ts';
export { webgpuDeepGemm, fp8WeightGemmNt, type AsyncDeepGemmOps } from './deepgemm.ts';
export { createWebGpuFlashMla, flashMlaWithKvcacheWebGpu } from './flashmla.ts';
export { getDevice, closeDevice, nodeBackend, type GpuContext, type WebGpuBackendName } from './device.ts';
export * from './errors.ts';
export { setWebGpuSizeLimits, sizeLimits, type SizeCaps, type SizeLimits } from './split.ts';
