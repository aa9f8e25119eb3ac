// Typed errors of the WebGPU backend. Everything the GPU path can refuse or lose surfaces as one of these,
// never as a raw GPUError or an opaque promise rejection.

/** No WebGPU implementation or no adapter (e.g. Mesa/EGL missing, or a Vulkan backend without a device). */
export class WebGpuUnavailableError extends Error {
  override name = 'WebGpuUnavailableError';
  constructor(readonly backend: string, readonly reason: string) {
    super(`WebGPU unavailable (backend ${backend}): ${reason}`);
  }
}

/** The device was lost (driver reset, destroy() while work was pending, ...). The next op opens a new one. */
export class WebGpuDeviceLostError extends Error {
  override name = 'WebGpuDeviceLostError';
  constructor(readonly reason: string, readonly detail: string) {
    super(`WebGPU device lost (${reason}): ${detail}`);
  }
}

/** A GPUError caught by an error scope or by the device's uncapturederror event. */
export class WebGpuValidationError extends Error {
  override name = 'WebGpuValidationError';
  constructor(readonly kind: 'validation' | 'out-of-memory' | 'internal' | 'uncaptured', readonly label: string, detail: string) {
    super(`WebGPU ${kind} error in ${label}: ${detail}`);
  }
}

/** WGSL that does not compile (a bug in a generator, reported with the shader key and Tint's messages). */
export class WebGpuShaderError extends Error {
  override name = 'WebGpuShaderError';
  constructor(readonly shaderKey: string, readonly messages: string[]) {
    super(`WGSL compilation failed for ${shaderKey}:\n${messages.join('\n')}`);
  }
}

/**
 * A request beyond the device's limits (binding size, workgroup count, ...) that no split can avoid;
 * `detail` names the tensor and the unit that does not fit (e.g. one weight row).
 */
export class WebGpuLimitError extends Error {
  override name = 'WebGpuLimitError';
  constructor(readonly limit: string, readonly requested: number, readonly allowed: number, readonly detail = '') {
    super(`WebGPU limit ${limit} exceeded: ${requested} > ${allowed}${detail ? ` (${detail})` : ''}`);
  }
}
