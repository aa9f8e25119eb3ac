// FP8 weight + block-scale pairing, by naming convention only (no model knowledge): every F8_E4M3
// tensor `X` (DeepSeek: `X = <...>.weight`) must have `X_scale_inv`, F32, of shape
// [ceil(rows/block), ceil(cols/block)] (block 128x128 in DeepSeek-V3, from `quantization_config.
// weight_block_size`), and every `*_scale_inv` must belong to such a tensor. Dequantisation is
// w[i, j] = e4m3(q[i, j]) * scaleInv[i / block_r, j / block_c] (the scale is multiplied despite its name).
// Reference: deepseek-ai/DeepSeek-V3 inference/kernel.py `weight_dequant`; shapes as in
// ../shared/testdata/deepseek-ref/README.md ("Block dequantisation").
import { SafetensorsError } from './errors.ts';
import type { TensorInfo, TensorSource } from './safetensors.ts';

export const SCALE_SUFFIX = '_scale_inv';
/** DeepSeek-V3's weight_block_size. */
export const DEFAULT_FP8_BLOCK: readonly [number, number] = [128, 128];

export interface Fp8Pair {
  readonly name: string;
  readonly weight: TensorInfo;
  readonly scale: TensorInfo;
  /** weight shape [rows, cols] */
  readonly rows: number;
  readonly cols: number;
  /** scale shape [ceil(rows / block[0]), ceil(cols / block[1])] */
  readonly scaleRows: number;
  readonly scaleCols: number;
}

export interface Fp8Weight {
  /** [rows, cols] e4m3fn codes */
  data: Uint8Array;
  /** [scaleRows, scaleCols] block multipliers */
  scaleInv: Float32Array;
  rows: number;
  cols: number;
}

/** The directory or file a source reads from, for messages. */
function sourceName(src: TensorSource): string {
  const s = src as { dir?: unknown; path?: unknown };
  return typeof s.dir === 'string' ? s.dir : typeof s.path === 'string' ? s.path : '(tensor source)';
}

/** Validates one FP8 weight and its scale; returns the pair. Throws SafetensorsError naming the tensor. */
export function fp8Pair(src: TensorSource, name: string, block: readonly [number, number] = DEFAULT_FP8_BLOCK): Fp8Pair {
  const weight = src.tensors.get(name);
  if (!weight) throw new SafetensorsError('missing-tensor', sourceName(src), 'no such tensor', name);
  if (weight.dtype !== 'F8_E4M3') throw new SafetensorsError('dtype-mismatch', weight.file, `dtype ${weight.dtype}, expected F8_E4M3`, name);
  if (weight.shape.length !== 2) {
    throw new SafetensorsError('fp8-bad-shape', weight.file, `FP8 weight must be 2-D, shape is ${JSON.stringify(weight.shape)}`, name);
  }
  const [rows, cols] = weight.shape as [number, number];
  const scaleName = name + SCALE_SUFFIX;
  const scale = src.tensors.get(scaleName);
  if (!scale) throw new SafetensorsError('fp8-missing-scale', weight.file, `FP8 weight without ${scaleName}`, name);
  if (scale.dtype !== 'F32') throw new SafetensorsError('fp8-scale-dtype', scale.file, `scale dtype ${scale.dtype}, expected F32`, scaleName);
  const scaleRows = Math.ceil(rows / block[0]);
  const scaleCols = Math.ceil(cols / block[1]);
  if (scale.shape.length !== 2 || scale.shape[0] !== scaleRows || scale.shape[1] !== scaleCols) {
    throw new SafetensorsError('fp8-scale-shape', scale.file,
      `scale shape ${JSON.stringify(scale.shape)}, expected [${scaleRows}, ${scaleCols}] for weight [${rows}, ${cols}] in ${block[0]}x${block[1]} blocks`, scaleName);
  }
  return { name, weight, scale, rows, cols, scaleRows, scaleCols };
}

/**
 * Finds and validates every FP8 weight/scale pair of a checkpoint (or single file). Throws on the first
 * FP8 tensor without a valid scale, and on any `*_scale_inv` tensor without an FP8 tensor beside it.
 */
export function findFp8Pairs(src: TensorSource, block: readonly [number, number] = DEFAULT_FP8_BLOCK): Map<string, Fp8Pair> {
  if (!(block.length === 2 && block.every((b) => Number.isSafeInteger(b) && b > 0))) throw new RangeError(`bad FP8 block size ${JSON.stringify(block)}`);
  const pairs = new Map<string, Fp8Pair>();
  for (const [name, t] of src.tensors) {
    if (t.dtype === 'F8_E4M3') pairs.set(name, fp8Pair(src, name, block));
  }
  for (const [name, t] of src.tensors) {
    if (!name.endsWith(SCALE_SUFFIX)) continue;
    const owner = name.slice(0, -SCALE_SUFFIX.length);
    if (!pairs.has(owner)) {
      const why = src.tensors.has(owner) ? `${owner} is ${src.tensors.get(owner)!.dtype}, not F8_E4M3` : `no tensor ${owner}`;
      throw new SafetensorsError('fp8-orphan-scale', t.file, `scale without an FP8 weight: ${why}`, name);
    }
  }
  return pairs;
}

/** Reads an FP8 weight and its scale into fresh buffers. */
export function readFp8(src: TensorSource, name: string, block: readonly [number, number] = DEFAULT_FP8_BLOCK): Fp8Weight {
  const p = fp8Pair(src, name, block);
  const data = new Uint8Array(p.weight.byteLength);
  const scaleInv = new Float32Array(p.scaleRows * p.scaleCols);
  src.readInto(name, data);
  src.readInto(p.scale.name, scaleInv);
  return { data, scaleInv, rows: p.rows, cols: p.cols };
}

/**
 * Reads an FP8 weight and its scale straight into caller-owned buffers (e.g. backend memory from
 * `allocWeight`), with no intermediate copy. Sizes must match exactly ('bad-destination' otherwise).
 */
export function readFp8Into(src: TensorSource, name: string, data: Uint8Array, scaleInv: Float32Array,
  block: readonly [number, number] = DEFAULT_FP8_BLOCK): Fp8Pair {
  const p = fp8Pair(src, name, block);
  src.readInto(name, data);
  src.readInto(p.scale.name, scaleInv);
  return p;
}
