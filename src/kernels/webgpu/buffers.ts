// GPU buffer helpers: upload typed arrays (8/16-bit data travels packed into u32 words, since WGSL storage
// has no u8/u16 types), temporary buffers, uniform parameter blocks and readback through mapAsync.
import type { GpuContext } from './device.ts';
import { WebGpuLimitError } from './errors.ts';
import { sizeLimits } from './split.ts';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes rounded up to whole u32 words (never 0: WebGPU bindings need a non-empty buffer). */
export function paddedSize(byteLength: number): number {
  return Math.max(4, Math.ceil(byteLength / 4) * 4);
}

/**
 * The bytes of `data` as u32 words, little-endian: byte i of a Uint8Array lands in word i>>2 at bit 8*(i&3),
 * element i of a Uint16Array in word i>>1 at bit 16*(i&1) — how the WGSL kernels unpack them. The tail of
 * the last word is zero.
 */
export function packWords(data: ArrayBufferView): Uint32Array {
  if (!LITTLE_ENDIAN) throw new Error('packWords: big-endian hosts are not supported');
  const words = new Uint32Array(paddedSize(data.byteLength) / 4);
  new Uint8Array(words.buffer).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return words;
}

/**
 * Every storage buffer is bound whole, so it must fit the (possibly lowered, split.ts) binding and buffer
 * limits; the ops split their tensors beforehand, so reaching this is a planning bug or an unsplit op.
 */
function checkBinding(ctx: GpuContext, bytes: number, label: string): void {
  const lim = sizeLimits(ctx);
  if (bytes > lim.storage) {
    throw new WebGpuLimitError(`maxStorageBufferBindingSize/maxBufferSize (${label})`, bytes, lim.storage,
      `storage buffer ${label} (maxStorageBufferBindingSize ${lim.binding} B, maxBufferSize ${lim.buffer} B)`);
  }
}

/** A storage buffer holding a copy of `data` (any typed array; 8/16-bit data becomes packed u32 words). */
export function uploadStorage(ctx: GpuContext, data: ArrayBufferView, label: string, extraUsage = 0): GPUBuffer {
  const size = paddedSize(data.byteLength);
  checkBinding(ctx, size, label);
  const buf = ctx.device.createBuffer({
    label, size, mappedAtCreation: true,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extraUsage,
  });
  new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buf.unmap();
  return buf;
}

/** A zero-filled storage buffer of at least `byteLength` bytes, readable back. */
export function emptyStorage(ctx: GpuContext, byteLength: number, label: string): GPUBuffer {
  const size = paddedSize(byteLength);
  checkBinding(ctx, size, label);
  return ctx.device.createBuffer({
    label, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
}

export type ParamField = readonly ['u32' | 'i32' | 'f32', number];

/**
 * A uniform buffer from scalar fields in declaration order (all 4 bytes, so the WGSL struct has the same
 * layout; the buffer is padded to 16 bytes as uniform structs require).
 */
export function uploadParams(ctx: GpuContext, fields: readonly ParamField[], label: string): GPUBuffer {
  const size = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  const buf = ctx.device.createBuffer({ label, size, mappedAtCreation: true, usage: GPUBufferUsage.UNIFORM });
  const dv = new DataView(buf.getMappedRange());
  fields.forEach(([t, v], i) => {
    if (t === 'u32') dv.setUint32(i * 4, v >>> 0, true);
    else if (t === 'i32') dv.setInt32(i * 4, v | 0, true);
    else dv.setFloat32(i * 4, v, true);
  });
  buf.unmap();
  return buf;
}

/** A MAP_READ staging buffer to copy `byteLength` bytes into. */
export function stagingBuffer(ctx: GpuContext, byteLength: number, label: string): GPUBuffer {
  return ctx.device.createBuffer({
    label: `${label}:staging`, size: paddedSize(byteLength),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
}

/** Maps a staging buffer (after the copy into it was submitted) and copies its first bytes out. */
export async function readStaging(staging: GPUBuffer, byteLength: number): Promise<ArrayBuffer> {
  await staging.mapAsync(GPUMapMode.READ);
  const out = staging.getMappedRange().slice(0, byteLength);
  staging.unmap();
  staging.destroy();
  return out;
}

/** Copies a storage buffer back to the host (one submit of its own). */
export async function readBuffer(ctx: GpuContext, buf: GPUBuffer, byteLength: number): Promise<ArrayBuffer> {
  const staging = stagingBuffer(ctx, byteLength, buf.label);
  const enc = ctx.device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, 0, staging, 0, paddedSize(byteLength));
  ctx.device.queue.submit([enc.finish()]);
  return readStaging(staging, byteLength);
}

const resident = new WeakMap<GPUDevice, WeakMap<object, Map<string, GPUBuffer>>>();

/**
 * A storage buffer holding `data`, uploaded on first request and kept for the device's lifetime, keyed by
 * the array object (weights: loaded once, used by many calls). The array must not change afterwards
 * unless releaseResident() is called first.
 */
export function residentStorage(ctx: GpuContext, data: ArrayBufferView, label: string): GPUBuffer {
  return residentPart(ctx, data, 'all', () => data, label);
}

/**
 * Like residentStorage, for one part of `owner` (a weight split to fit the binding limit): `key` names the
 * part within the owner, `make` builds its contents on first request.
 */
export function residentPart(ctx: GpuContext, owner: ArrayBufferView, key: string, make: () => ArrayBufferView, label: string): GPUBuffer {
  let m = resident.get(ctx.device);
  if (!m) resident.set(ctx.device, (m = new WeakMap()));
  let parts = m.get(owner);
  if (!parts) m.set(owner, (parts = new Map()));
  let b = parts.get(key);
  if (!b) {
    b = uploadStorage(ctx, make(), label);
    parts.set(key, b);
  }
  return b;
}

/** Drops (and destroys) the resident copies of `data` (all its parts), if any. */
export function releaseResident(ctx: GpuContext, data: ArrayBufferView): void {
  const m = resident.get(ctx.device);
  const parts = m?.get(data);
  if (parts) {
    m!.delete(data);
    for (const b of parts.values()) b.destroy();
  }
}

/** Runs `fn` with a list to push per-call buffers onto; they are destroyed when it settles. */
export async function withTemps<T>(fn: (temps: GPUBuffer[]) => Promise<T>): Promise<T> {
  const temps: GPUBuffer[] = [];
  try {
    return await fn(temps);
  } finally {
    for (const b of temps) b.destroy();
  }
}
