// The WebGPU (WGSL) backend: asynchronous forward ops, DeepGEMM and FlashMLA on one lazily opened
// device (ops.ts, deepgemm.ts, flashmla.ts: each op uploads its inputs and reads back its result), and the
// GPU-resident ops the model's GPU forward records into one submit (resident.ts; src/model/gpu/forward.ts).
// registry.ts registers `webgpu` in the kernel registry (its synchronous ops are ref's host fallbacks).
export { loadWebGpuBackend, type AsyncKernelOps, type WebGpuBackend } from './ops.ts';
export { webgpuDeepGemm, fp8WeightGemmNt, type AsyncDeepGemmOps } from './deepgemm.ts';
export { createWebGpuFlashMla, flashMlaWithKvcacheWebGpu } from './flashmla.ts';
export { getDevice, closeDevice, nodeBackend, type GpuContext, type WebGpuBackendName } from './device.ts';
export * from './errors.ts';
export { setWebGpuSizeLimits, sizeLimits, type SizeCaps, type SizeLimits } from './split.ts';
export {
  GpuRecorder, GpuWorkspace, gpuRecorder, gpuTensor, gpuTensorFrom, uploadWeight, uploadVector,
  type GpuTensor, type GpuWeight,
} from './resident.ts';
