// Storage-size limits and the plans that split tensors to fit them.
//
// A WGSL kernel binds whole buffers here, so every storage buffer must fit both
// maxStorageBufferBindingSize and maxBufferSize (typically 128 MiB-2 GiB and 256 MiB-4 GiB). Real
// DeepSeek tensors exceed that (V2-Lite's 102400x2048 BF16 lm_head is 400 MB; a V3 layer's 256 stacked FP8
// experts 3.7 GB), so the ops split instead of refusing:
//   weights  W[G, N, K] into parts: whole groups per part when one group fits, else one group per part and
//            its N rows in ranges (multiples of 128 for FP8, so every part owns whole 128x128 scale blocks);
//   activations / outputs into row chunks;
//   the FlashMLA cache into ranges of 64-token blocks (flashmla.ts).
// Only a unit that cannot be split further (one weight row, or 128 rows for FP8; one activation row; one
// cache block) larger than the limit is refused, with a WebGpuLimitError naming the tensor.
//
// Tests lower the limits (setWebGpuSizeLimits) so that small tensors on llvmpipe take the split paths.
import type { GpuContext } from './device.ts';
import { WebGpuLimitError } from './errors.ts';

export interface SizeCaps {
  /** Caps maxStorageBufferBindingSize (bytes) below the device's value. */
  readonly maxBindingBytes?: number;
  /** Caps maxBufferSize (bytes) below the device's value. */
  readonly maxBufferBytes?: number;
}

let caps: SizeCaps = {};

/**
 * Lowers the storage limits every op of this process plans with (never above the device's own); `{}`
 * restores the device limits. Returns the previous caps. For tests and for leaving headroom.
 */
export function setWebGpuSizeLimits(c: SizeCaps): SizeCaps {
  for (const [k, v] of Object.entries(c)) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 4)) throw new RangeError(`${k} = ${v} must be an integer >= 4`);
  }
  const old = caps;
  caps = { ...c };
  return old;
}

export interface SizeLimits {
  /** Effective maxStorageBufferBindingSize. */
  readonly binding: number;
  /** Effective maxBufferSize. */
  readonly buffer: number;
  /** Largest storage buffer a kernel may bind whole: min of the two, down to whole u32 words. */
  readonly storage: number;
}

export function sizeLimits(ctx: GpuContext): SizeLimits {
  const binding = Math.min(ctx.limits.maxStorageBufferBindingSize, caps.maxBindingBytes ?? Infinity);
  const buffer = Math.min(ctx.limits.maxBufferSize, caps.maxBufferBytes ?? Infinity);
  return { binding, buffer, storage: Math.floor(Math.min(binding, buffer) / 4) * 4 };
}

/** The typed error for a unit that cannot be split below the storage limit. */
export function tooLarge(lim: SizeLimits, tensor: string, unit: string, bytes: number): WebGpuLimitError {
  return new WebGpuLimitError(`maxStorageBufferBindingSize/maxBufferSize (${tensor})`, bytes, lim.storage,
    `${tensor}: ${unit} of ${bytes} B cannot be split and exceeds the storage limit ` +
    `(maxStorageBufferBindingSize ${lim.binding} B, maxBufferSize ${lim.buffer} B)`);
}

export type Range = readonly [number, number];

/** [0, n) in `count` near-equal ranges whose starts are multiples of `unit` (the last may be shorter). */
export function splitEven(n: number, maxLen: number, unit: number): Range[] {
  const count = Math.ceil(n / maxLen);
  const len = Math.ceil(Math.ceil(n / count) / unit) * unit;
  const out: Range[] = [];
  for (let s = 0; s < n; s += len) out.push([s, Math.min(n, s + len)]);
  return out;
}

export interface WeightSplit {
  /** Group ranges [g0, g1): each part holds whole groups of its range... */
  readonly groups: Range[];
  /** ...and these output rows [n0, n1) of each of them (the same for every group range). */
  readonly cols: Range[];
}

export interface WeightShape {
  readonly tensor: string;
  readonly groups: number;
  /** Output rows N (the weight's rows). */
  readonly n: number;
  readonly k: number;
  /** Bytes per element: 4 f32, 2 bf16, 1 fp8. */
  readonly elemBytes: number;
  /** FP8: 128x128 scale blocks, so N splits at multiples of 128 and each part has its scale rows. */
  readonly blockScaled: boolean;
}

const BLOCK = 128;

/**
 * Parts of W[G, N, K] that each fit `lim.storage` (data and, for FP8, its [G', ceil(N'/128), ceil(K/128)]
 * f32 scales): whole groups per part while one group fits, else single groups split along N.
 */
export function planWeightSplit(w: WeightShape, lim: SizeLimits): WeightSplit {
  const cap = lim.storage;
  const kb = Math.ceil(w.k / BLOCK);
  const fits = (g: number, rows: number) =>
    g * rows * w.k * w.elemBytes <= cap && (!w.blockScaled || g * Math.ceil(rows / BLOCK) * kb * 4 <= cap);
  if (fits(w.groups, w.n)) return { groups: [[0, w.groups]], cols: [[0, w.n]] };
  if (fits(1, w.n)) {
    // One group fits, so its data is non-empty and the quotients are ≥ 1.
    let per = Math.floor(cap / (w.n * w.k * w.elemBytes));
    if (w.blockScaled) per = Math.min(per, Math.floor(cap / (Math.ceil(w.n / BLOCK) * kb * 4)));
    return { groups: splitEven(w.groups, per, 1), cols: [[0, w.n]] };
  }
  const unit = w.blockScaled ? Math.min(BLOCK, w.n) : 1;
  let maxRows = Math.floor(cap / Math.max(1, w.k * w.elemBytes) / unit) * unit;
  while (maxRows >= unit && !fits(1, maxRows)) maxRows -= unit;
  if (maxRows < unit) {
    throw tooLarge(lim, w.tensor, `${unit === 1 ? 'one row' : `one block of ${unit} rows`} (${w.k} columns)`, unit * w.k * w.elemBytes);
  }
  return { groups: splitEven(w.groups, 1, 1), cols: splitEven(w.n, maxRows, unit) };
}

/**
 * Column bands of the output: consecutive weight-part column ranges merged while a band row fits
 * (each band is one output buffer that its parts write at their column offsets).
 */
export function planBands(cols: readonly Range[], lim: SizeLimits, tensor: string): Range[] {
  const out: Range[] = [];
  for (const [c0, c1] of cols) {
    if ((c1 - c0) * 4 > lim.storage) throw tooLarge(lim, tensor, `one output row of a weight part (${c1 - c0} f32)`, (c1 - c0) * 4);
    const last = out[out.length - 1];
    if (last && (c1 - last[0]) * 4 <= lim.storage) out[out.length - 1] = [last[0], c1];
    else out.push([c0, c1]);
  }
  return out;
}

/**
 * Row chunks of `rows` so that every per-row tensor of a chunk fits: `perRow` lists [tensor, bytes per row].
 */
export function planRowChunks(rows: number, perRow: readonly (readonly [string, number])[], lim: SizeLimits): Range[] {
  let worst = 1;
  for (const [tensor, bytes] of perRow) {
    if (bytes > lim.storage) throw tooLarge(lim, tensor, 'one row', bytes);
    worst = Math.max(worst, bytes);
  }
  if (rows === 0) return [];
  return splitEven(rows, Math.max(1, Math.floor(lim.storage / worst)), 1);
}
