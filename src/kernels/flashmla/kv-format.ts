// Storage formats of one token row of the paged latent cache: f32, bf16 bits, and DeepSeek-V3.2's FP8
// layout (656 B for a 576-wide row: 512 e4m3, 4 f32 power-of-two scales, 64 bf16 RoPE values).
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/tests/quant.py (quantize_k_cache /
// dequantize_k_cache) and README "FP8 KV cache" section.
import { FP8_E4M3_TABLE, bf16ToF32, f32ToBf16, f32ToFp8e4m3 } from '../../tensor/dtypes.ts';
import { FP8_TILE, FlashMlaError, MLA_BLOCK_SIZE, fp8BytesPerToken, type KvCacheDType, type KvCacheLayer } from './types.ts';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * FP8 tile scale: the smallest power of two ≥ max(amax/448, 1e-4), i.e. 2^ceil(log2(·)), computed on
 * the f32 bits so it is exact (no log2 rounding).
 */
export function fp8TileScale(amax: number): number {
  const v = Math.max(Math.fround(amax / 448), Math.fround(1e-4));
  f32[0] = v;
  const bits = u32[0]!;
  const exp = (bits >>> 23) & 0xff;
  if ((bits & 0x7fffff) === 0) return v; // already a power of two
  // v is a normal f32 here (≥ 1e-4), so the next power of two is 2^(exp−127+1).
  u32[0] = (exp + 1) << 23;
  return f32[0]!;
}

/** Elements (f32/bf16) or bytes (fp8) of one token of one kv head. */
export function rowStride(dtype: KvCacheDType, headDim: number, ropeDim: number): number {
  return dtype === 'fp8' ? fp8BytesPerToken(headDim, ropeDim) : headDim;
}

/** Checks a cache layer's fields against each other; returns its per-token-head stride. */
export function validateCacheLayer(c: KvCacheLayer): number {
  const { numBlocks, numKvHeads, headDim } = c;
  for (const [k, v] of [['numBlocks', numBlocks], ['numKvHeads', numKvHeads], ['headDim', headDim]] as const) {
    if (!Number.isInteger(v) || v < (k === 'numBlocks' ? 0 : 1)) throw new FlashMlaError('bad-cache', `kCache.${k} = ${v} is invalid`);
  }
  if (c.dtype === 'fp8') {
    const nope = headDim - c.ropeDim;
    if (!Number.isInteger(c.ropeDim) || c.ropeDim < 0 || nope <= 0 || nope % FP8_TILE !== 0) {
      throw new FlashMlaError('bad-cache', `fp8 cache needs headDim − ropeDim to be a positive multiple of ${FP8_TILE} (headDim ${headDim}, ropeDim ${c.ropeDim})`);
    }
    if (c.data.byteOffset % 4 !== 0) throw new FlashMlaError('bad-cache', 'fp8 cache data must start 4-byte aligned (f32 scales)');
  }
  const stride = rowStride(c.dtype, headDim, c.dtype === 'fp8' ? c.ropeDim : 0);
  const want = numBlocks * MLA_BLOCK_SIZE * numKvHeads * stride;
  if (c.data.length !== want) {
    throw new FlashMlaError('bad-cache', `kCache.data has ${c.data.length} elements, [${numBlocks}, ${MLA_BLOCK_SIZE}, ${numKvHeads}, ${stride}] needs ${want}`);
  }
  return stride;
}

/** Index of token row (block, slot, head) in `data` (elements for f32/bf16, bytes for fp8). */
export function rowOffset(c: KvCacheLayer, stride: number, block: number, slot: number, head: number): number {
  return ((block * MLA_BLOCK_SIZE + slot) * c.numKvHeads + head) * stride;
}

/**
 * Writes one token row `src[srcOff .. srcOff+headDim)` into the cache at (block, slot, head), converting:
 * bf16 rounds to nearest even; fp8 quantizes the no-RoPE part per 128-value tile and stores RoPE as bf16.
 */
export function writeRow(c: KvCacheLayer, block: number, slot: number, head: number, src: ArrayLike<number>, srcOff = 0): void {
  const d = c.headDim;
  if (c.dtype === 'f32') {
    const o = rowOffset(c, d, block, slot, head);
    for (let i = 0; i < d; i++) c.data[o + i] = src[srcOff + i]!;
    return;
  }
  if (c.dtype === 'bf16') {
    const o = rowOffset(c, d, block, slot, head);
    for (let i = 0; i < d; i++) c.data[o + i] = f32ToBf16(src[srcOff + i]!);
    return;
  }
  const stride = fp8BytesPerToken(d, c.ropeDim);
  const o = rowOffset(c, stride, block, slot, head);
  const nope = d - c.ropeDim;
  const tiles = nope / FP8_TILE;
  const bytes = c.data;
  const scales = new Float32Array(bytes.buffer, bytes.byteOffset + o + nope, tiles);
  for (let t = 0; t < tiles; t++) {
    let amax = 0;
    for (let i = t * FP8_TILE; i < (t + 1) * FP8_TILE; i++) amax = Math.max(amax, Math.abs(src[srcOff + i]!));
    const s = fp8TileScale(amax);
    scales[t] = s;
    for (let i = t * FP8_TILE; i < (t + 1) * FP8_TILE; i++) bytes[o + i] = f32ToFp8e4m3(Math.fround(src[srcOff + i]! / s));
  }
  const ropeOff = o + nope + 4 * tiles;
  for (let i = 0; i < c.ropeDim; i++) {
    const h = f32ToBf16(src[srcOff + nope + i]!);
    bytes[ropeOff + 2 * i] = h & 0xff;
    bytes[ropeOff + 2 * i + 1] = h >>> 8;
  }
}

/** Reads (dequantizes) the first `n` values of token row (block, slot, head) into dst[0..n). */
export function readRow(c: KvCacheLayer, block: number, slot: number, head: number, dst: Float32Array | Float64Array, n = c.headDim): void {
  const d = c.headDim;
  if (c.dtype === 'f32') {
    const o = rowOffset(c, d, block, slot, head);
    for (let i = 0; i < n; i++) dst[i] = c.data[o + i]!;
    return;
  }
  if (c.dtype === 'bf16') {
    const o = rowOffset(c, d, block, slot, head);
    for (let i = 0; i < n; i++) dst[i] = bf16ToF32(c.data[o + i]!);
    return;
  }
  const stride = fp8BytesPerToken(d, c.ropeDim);
  const o = rowOffset(c, stride, block, slot, head);
  const nope = d - c.ropeDim;
  const bytes = c.data;
  const scales = new Float32Array(bytes.buffer, bytes.byteOffset + o + nope, nope / FP8_TILE);
  const m = Math.min(n, nope);
  for (let i = 0; i < m; i++) dst[i] = FP8_E4M3_TABLE[bytes[o + i]!]! * scales[(i / FP8_TILE) | 0]!;
  const ropeOff = o + nope + 4 * (nope / FP8_TILE);
  for (let i = nope; i < n; i++) {
    const k = ropeOff + 2 * (i - nope);
    dst[i] = bf16ToF32(bytes[k]! | (bytes[k + 1]! << 8));
  }
}

/** Allocates a zeroed cache layer of the given format. */
export function allocCacheLayer(dtype: KvCacheDType, numBlocks: number, numKvHeads: number, headDim: number, ropeDim = 64): KvCacheLayer {
  const shape = { numBlocks, numKvHeads, headDim };
  const n = numBlocks * MLA_BLOCK_SIZE * numKvHeads;
  switch (dtype) {
    case 'f32': return { ...shape, dtype, data: new Float32Array(n * headDim) };
    case 'bf16': return { ...shape, dtype, data: new Uint16Array(n * headDim) };
    case 'fp8': {
      const layer = { ...shape, dtype, ropeDim, data: new Uint8Array(n * fp8BytesPerToken(headDim, ropeDim)) } as const;
      validateCacheLayer(layer);
      return layer;
    }
  }
}

/**
 * Fills token row (block, slot, head) with NaN in its storage format (f32 NaN, bf16 0x7FC0, fp8 code 0x7F,
 * NaN scales, NaN RoPE) — how tests poison unused slots.
 */
export function poisonRow(c: KvCacheLayer, block: number, slot: number, head: number): void {
  const d = c.headDim;
  if (c.dtype === 'f32') {
    c.data.fill(NaN, rowOffset(c, d, block, slot, head), rowOffset(c, d, block, slot, head) + d);
  } else if (c.dtype === 'bf16') {
    c.data.fill(0x7fc0, rowOffset(c, d, block, slot, head), rowOffset(c, d, block, slot, head) + d);
  } else {
    const stride = fp8BytesPerToken(d, c.ropeDim);
    const o = rowOffset(c, stride, block, slot, head);
    const nope = d - c.ropeDim;
    c.data.fill(0x7f, o, o + nope);
    new Float32Array(c.data.buffer, c.data.byteOffset + o + nope, nope / FP8_TILE).fill(NaN);
    for (let i = 0; i < c.ropeDim; i++) {
      const k = o + nope + 4 * (nope / FP8_TILE) + 2 * i;
      c.data[k] = 0xc0;
      c.data[k + 1] = 0x7f;
    }
  }
}
