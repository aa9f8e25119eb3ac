/// <reference types="@webgpu/types" />
// One lazily opened WebGPU device per process (per JS realm), in Node through Dawn (the `webgpu` package)
// or in a browser through navigator.gpu.
//
// Node: the backend is chosen by env SEEKD_WEBGPU_BACKEND = opengles (default; Mesa llvmpipe through
// surfaceless EGL, needs EGL_PLATFORM=surfaceless, feature level 'compatibility') | vulkan (feature level
// 'core') | d3d12 | metal. The adapter's compute limits are requested explicitly: compat defaults are tiny
// (128 invocations, 16 KiB workgroup storage, 8 storage buffers) and reject the kernels here.
// Call closeDevice() at the end of a process (tests: in `after`) so Dawn lets the event loop exit.
import { WebGpuDeviceLostError, WebGpuUnavailableError, WebGpuValidationError } from './errors.ts';

export type WebGpuBackendName = 'opengles' | 'vulkan' | 'd3d12' | 'metal';

export interface GpuContext {
  /**
   * The GPU instance and adapter, held for the device's lifetime: Dawn's instance is garbage-collectable,
   * and collecting it while its device lives crashes the process (a freed mutex in ProcessEvents).
   */
  readonly gpu: GPU;
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  /** Where it runs: 'node:opengles', 'node:vulkan', 'browser'. */
  readonly platform: string;
  readonly featureLevel: 'core' | 'compatibility';
  readonly adapterDescription: string;
  /** Set when the device is lost or destroyed; ops check it before use. */
  lost: WebGpuDeviceLostError | null;
  /** Errors no error scope caught (uncapturederror); the next op throws the first of them. */
  readonly uncaptured: WebGpuValidationError[];
}

/** Compute limits requested at the adapter's maximum (adapter defaults for compat are far lower). */
const REQUESTED_LIMITS = [
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ', 'maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage', 'maxStorageBufferBindingSize', 'maxBufferSize',
  'maxUniformBufferBindingSize', 'maxBindGroups',
] as const;

let current: Promise<GpuContext> | null = null;
let currentCtx: GpuContext | null = null;
let opened = 0;

/** The backend Node uses, from SEEKD_WEBGPU_BACKEND (default opengles). */
export function nodeBackend(): WebGpuBackendName {
  const v = (globalThis.process?.env?.SEEKD_WEBGPU_BACKEND ?? 'opengles').toLowerCase();
  if (v === 'opengles' || v === 'vulkan' || v === 'd3d12' || v === 'metal') return v;
  throw new WebGpuUnavailableError(v, 'SEEKD_WEBGPU_BACKEND must be opengles, vulkan, d3d12 or metal');
}

async function findGpu(): Promise<{ gpu: GPU; platform: string; featureLevel: 'core' | 'compatibility'; keep?: unknown }> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  const isNode = typeof globalThis.process?.versions?.node === 'string';
  if (!isNode) {
    if (!nav?.gpu) throw new WebGpuUnavailableError('browser', 'navigator.gpu is not available');
    return { gpu: nav.gpu, platform: 'browser', featureLevel: 'core' };
  }
  const backend = nodeBackend();
  let mod: { create(opts: string[]): GPU; globals: object };
  try {
    mod = (await import('webgpu')) as unknown as typeof mod;
  } catch (e) {
    throw new WebGpuUnavailableError(backend, `cannot load the webgpu package: ${(e as Error).message}`);
  }
  // GPUBufferUsage, GPUMapMode, ... are globals in browsers; Dawn hands them over as `globals`.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  // Mesa's EGL needs a platform without a display server; Node's process.env writes the real environment,
  // which EGL reads when Dawn first initializes it (below), so callers need not set it themselves.
  if (backend === 'opengles' && globalThis.process?.env && !process.env.EGL_PLATFORM) process.env.EGL_PLATFORM = 'surfaceless';
  const gpu = mod.create([`backend=${backend}`]);
  return { gpu, platform: `node:${backend}`, featureLevel: backend === 'opengles' ? 'compatibility' : 'core' };
}

async function open(): Promise<GpuContext> {
  const { gpu, platform, featureLevel } = await findGpu();
  const adapter = await gpu.requestAdapter({ featureLevel, powerPreference: 'high-performance' });
  if (!adapter) {
    throw new WebGpuUnavailableError(platform, `no adapter for featureLevel ${featureLevel}` +
      (platform === 'node:opengles' ? ' (is EGL_PLATFORM=surfaceless set and Mesa EGL/GLES installed?)' : ''));
  }
  const requiredLimits: Record<string, number> = {};
  const al = adapter.limits as unknown as Record<string, number>;
  for (const k of REQUESTED_LIMITS) if (typeof al[k] === 'number') requiredLimits[k] = al[k];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, label: 'seekd' });
  } catch (e) {
    throw new WebGpuUnavailableError(platform, `requestDevice failed: ${(e as Error).message}`);
  }
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const ctx: GpuContext = {
    gpu,
    adapter,
    device,
    limits: device.limits,
    platform,
    featureLevel,
    adapterDescription: info ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') : '',
    lost: null,
    uncaptured: [],
  };
  opened++;
  void device.lost.then((li) => {
    ctx.lost = new WebGpuDeviceLostError(li.reason ?? 'unknown', li.message);
    // A lost device is never handed out again; the next getDevice() opens a fresh one.
    if (currentCtx === ctx) { current = null; currentCtx = null; }
  });
  device.addEventListener('uncapturederror', (ev) => {
    const err = (ev as GPUUncapturedErrorEvent).error;
    ctx.uncaptured.push(new WebGpuValidationError('uncaptured', 'device', err.message));
  });
  return ctx;
}

/** The process's device, opened on first use. */
export function getDevice(): Promise<GpuContext> {
  if (!current) {
    const p = open();
    current = p;
    // A failed open must not stick: the next call retries.
    p.then((ctx) => { if (current === p) currentCtx = ctx; }, () => { if (current === p) current = null; });
  }
  return current;
}

/** How many devices this process has opened (tests: lazy creation, reopen after loss). */
export function devicesOpened(): number {
  return opened;
}

/** Throws if the device is lost or reported an uncaptured error since the last check. */
export function checkDevice(ctx: GpuContext): void {
  if (ctx.lost) throw ctx.lost;
  const e = ctx.uncaptured.shift();
  if (e) throw e;
}

/** Destroys the process's device (frees GPU memory, lets Node exit). Safe to call when none is open. */
export async function closeDevice(): Promise<void> {
  const p = current;
  current = null;
  currentCtx = null;
  if (!p) return;
  let ctx: GpuContext;
  try { ctx = await p; } catch { return; }
  ctx.device.destroy();
  // Dawn resolves device.lost on destroy; wait for it so no callback is pending at exit.
  await ctx.device.lost;
}

/** What `seekd info --backend webgpu` reports: where the device runs and the limits the ops plan with. */
export interface DeviceReport {
  platform: string;
  featureLevel: 'core' | 'compatibility';
  adapter: string;
  features: string[];
  limits: Record<string, number>;
}

export function describeDevice(ctx: GpuContext): DeviceReport {
  const lim = ctx.limits as unknown as Record<string, number>;
  const limits: Record<string, number> = {};
  for (const k of REQUESTED_LIMITS) if (typeof lim[k] === 'number') limits[k] = lim[k];
  return {
    platform: ctx.platform, featureLevel: ctx.featureLevel, adapter: ctx.adapterDescription,
    features: [...ctx.device.features].map(String).sort(), limits,
  };
}
