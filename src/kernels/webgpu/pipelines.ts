// Compute pipelines cached by a stable shader key (op + the generator parameters baked into the WGSL), so
// a pipeline is compiled once per device and never per call, and `runPasses`, which encodes a sequence of
// dispatches plus readbacks in one submit inside validation / out-of-memory error scopes.
import { checkDevice, type GpuContext } from './device.ts';
import { WebGpuLimitError, WebGpuShaderError, WebGpuValidationError } from './errors.ts';
import { paddedSize, readStaging, stagingBuffer } from './buffers.ts';

const caches = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();
let created = 0;

/** Pipelines compiled so far in this process (all devices): tests check a repeated call adds none. */
export function pipelinesCreated(): number {
  return created;
}

/**
 * The compute pipeline for `key`, compiling `generate()` (entry point `main`, layout 'auto') the first time
 * this device sees the key. `key` must determine the WGSL completely.
 */
export function getPipeline(ctx: GpuContext, key: string, generate: () => string): Promise<GPUComputePipeline> {
  let cache = caches.get(ctx.device);
  if (!cache) caches.set(ctx.device, (cache = new Map()));
  let p = cache.get(key);
  if (!p) {
    p = compile(ctx, key, generate());
    cache.set(key, p);
    const c = cache;
    p.catch(() => c.delete(key));
  }
  return p;
}

async function compile(ctx: GpuContext, key: string, code: string): Promise<GPUComputePipeline> {
  const { device } = ctx;
  checkDevice(ctx);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: key, code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  let pipeline: GPUComputePipeline | null = null;
  let failure: unknown = null;
  if (errors.length === 0) {
    try {
      pipeline = await device.createComputePipelineAsync({ label: key, layout: 'auto', compute: { module, entryPoint: 'main' } });
    } catch (e) {
      failure = e;
    }
  }
  const scoped = await device.popErrorScope();
  if (errors.length > 0) throw new WebGpuShaderError(key, errors);
  if (failure || scoped || !pipeline) {
    const msg = scoped?.message ?? (failure as Error | null)?.message ?? 'no pipeline';
    throw new WebGpuShaderError(key, [msg]);
  }
  created++;
  return pipeline;
}

export interface Pass {
  pipeline: GPUComputePipeline;
  /** Buffers bound to @group(0) @binding(i) in order (whole, or a range: a uniform block inside a shared buffer). */
  buffers: readonly (GPUBuffer | GPUBufferBinding)[];
  /** Workgroup counts. */
  groups: readonly [number, number?, number?];
}

export interface Readback {
  buffer: GPUBuffer;
  byteLength: number;
}

/**
 * Encodes the passes in order (one compute pass each, so storage writes of one are visible to the next),
 * copies the readbacks into staging buffers, submits once and returns their bytes. Validation and OOM
 * errors raised meanwhile become WebGpuValidationError.
 */
export async function runPasses(ctx: GpuContext, label: string, passes: readonly Pass[], readbacks: readonly Readback[]): Promise<ArrayBuffer[]> {
  checkDevice(ctx);
  const { device } = ctx;
  const maxGroups = ctx.limits.maxComputeWorkgroupsPerDimension;
  for (const p of passes) {
    for (const g of p.groups) if (g !== undefined && g > maxGroups) {
      throw new WebGpuLimitError(`maxComputeWorkgroupsPerDimension (${label})`, g, maxGroups);
    }
  }
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  const enc = device.createCommandEncoder({ label });
  for (const p of passes) {
    const bind = device.createBindGroup({
      layout: p.pipeline.getBindGroupLayout(0),
      entries: p.buffers.map((b, binding) => ({ binding, resource: isRange(b) ? b : { buffer: b } })),
    });
    const pass = enc.beginComputePass();
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, bind);
    const [x, y = 1, z = 1] = p.groups;
    if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
    pass.end();
  }
  const stagings = readbacks.map((r) => {
    const s = stagingBuffer(ctx, r.byteLength, label);
    enc.copyBufferToBuffer(r.buffer, 0, s, 0, paddedSize(r.byteLength));
    return s;
  });
  device.queue.submit([enc.finish()]);
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  if (validation || oom) {
    for (const s of stagings) s.destroy();
    if (validation) throw new WebGpuValidationError('validation', label, validation.message);
    throw new WebGpuValidationError('out-of-memory', label, oom!.message);
  }
  const out = await Promise.all(stagings.map((s, i) => readStaging(s, readbacks[i]!.byteLength)));
  checkDevice(ctx);
  return out;
}

/** A buffer range (GPUBufferBinding) rather than a GPUBuffer bound whole. */
function isRange(b: GPUBuffer | GPUBufferBinding): b is GPUBufferBinding {
  return typeof (b as GPUBufferBinding).buffer === 'object';
}
