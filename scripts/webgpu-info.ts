// Prints the WebGPU device seekd opens (platform, adapter, feature level, the limits that matter) as JSON.
// Usage: node --import tsx scripts/webgpu-info.ts   (SEEKD_WEBGPU_BACKEND=vulkan|opengles, default opengles)
import { closeDevice, getDevice } from '../src/kernels/webgpu/device.ts';

const ctx = await getDevice();
const l = ctx.limits;
console.log(JSON.stringify({
  platform: ctx.platform,
  featureLevel: ctx.featureLevel,
  adapter: ctx.adapterDescription,
  features: [...ctx.device.features],
  limits: {
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  },
}, null, 2));
await closeDevice();
