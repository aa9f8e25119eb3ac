// Registers the `webgpu` backend in the kernel registry, so `--backend webgpu` loads like the others.
// Its synchronous KernelOps are the `ref` fallbacks (host arrays: weights load into plain typed arrays,
// which the GPU forward uploads once, src/model/gpu/forward.ts); the GPU work itself is asynchronous and
// recorded (resident.ts), so none of the synchronous ops is its own (`native` is empty). Creating it opens
// the process's device, so a machine without WebGPU fails at load with WebGpuUnavailableError.
import { registerBackend } from '../api.ts';
import { closeDevice, getDevice } from './device.ts';

registerBackend({
  name: 'webgpu',
  async create() {
    await getDevice();
    return { dispose: closeDevice };
  },
});
