// FlashMLA on WebAssembly SIMD128 with worker threads over one shared memory: the scheduler's parts are
// dealt to the pool's participants (contiguous ranges of parts, which FlashMLA's balancing made equal in
// cost), each runs the main kernel (src/kernels/wasm/assembly/flashmla.ts) over its (request, kv head,
// block range) units, and the split partials are merged by the LSE combine (combine.ts).
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/kernels/splitkv_mla.cu (grid =
// (row blocks, h_kv, num_sm_parts)) and csrc/kernels/mla_combine.cu.
import { FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { ScratchArena } from '../wasm/heap.ts';
import { WasmRuntime } from '../wasm/runtime.ts';
import { combineSplits } from './combine.ts';
import { fp8BytesPerToken, MLA_BLOCK_SIZE, type FlashMlaArgs, type FlashMlaResult, type KvCacheDType, type KvCacheLayer, type SyncFlashMlaKernel } from './types.ts';
import { planFlashMla } from './validate.ts';
import { metadataParts } from './metadata.ts';

const PARAMS = 24;
const UNIT_INTS = 8;
/** Folded query rows per tile of the kernel (assembly/flashmla.ts ROW_TILE). */
export const ROW_TILE = 64;

/**
 * Splits each of the first `n` units (UNIT_INTS each) into chunks of ROW_TILE folded rows (unit ints 6, 7
 * = [r0, r1)) and cuts the chunk list, in order, into `parts` contiguous ranges of about equal cost:
 * the keys each row sees within its unit's blocks (causal: row r = s·g + j sees keys
 * < len − sQ + 1 + s), plus a row-tile's fixed work. Returns the chunk table and range bounds.
 */
export function splitUnitRows(units: Int32Array, n: number, R: number, g: number, sQ: number, seqlens: Int32Array,
  causal: boolean, parts: number): { units: Int32Array; bounds: number[] } {
  const chunks: number[][] = [];
  const cost: number[] = [];
  for (let u = 0; u < n; u++) {
    const o = u * UNIT_INTS;
    const len = seqlens[units[o]!]!;
    const k0 = units[o + 1]! * MLA_BLOCK_SIZE, k1 = Math.min(len, units[o + 2]! * MLA_BLOCK_SIZE);
    for (let r0 = 0; r0 < R; r0 += ROW_TILE) {
      const r1 = Math.min(R, r0 + ROW_TILE);
      let c = 0;
      for (let r = r0; r < r1; r++) {
        const lim = causal ? Math.min(k1, len - sQ + 1 + Math.floor(r / g)) : k1;
        c += Math.max(0, lim - k0) + 8;
      }
      chunks.push([...units.subarray(o, o + 6), r0, r1]);
      cost.push(c);
    }
  }
  const total = cost.reduce((x, y) => x + y, 0);
  const bounds = [0];
  let acc = 0, i = 0;
  for (let t = 1; t < parts; t++) {
    while (i < chunks.length && acc + cost[i]! / 2 < (total * t) / parts) acc += cost[i++]!;
    bounds.push(i);
  }
  bounds.push(chunks.length);
  return { units: Int32Array.from(chunks.flat()), bounds };
}
const DTYPE_CODE: Record<KvCacheDType, number> = { f32: 0, bf16: 1, fp8: 2 };

/**
 * Row ranges per participant when a call's rows are split (a prefill): taken at run time, so a slower
 * core (another process on it) takes fewer instead of making the others wait.
 */
const ROW_RANGES_PER_THREAD = 8;

export interface WasmFlashMlaOptions {
  threads?: number;
  /** Share an existing wasm runtime (its memory, heap and pool) instead of starting one. */
  runtime?: WasmRuntime;
}

export class WasmFlashMla implements SyncFlashMlaKernel {
  readonly backend = 'wasm';
  private readonly lut: number;
  private scratch: { bytes: number; ptrs: number[] } = { bytes: 0, ptrs: [] };
  /** Per-call staging (outputs, accumulators, inputs from JS memory), one block reused across calls. */
  private readonly arena: ScratchArena;

  private constructor(readonly runtime: WasmRuntime, private readonly ownsRuntime: boolean) {
    this.arena = new ScratchArena(runtime.heap);
    this.lut = runtime.heap.alloc(256 * 4);
    runtime.heap.f32(this.lut, 256).set(FP8_E4M3_TABLE);
  }

  static async create(o: WasmFlashMlaOptions = {}): Promise<WasmFlashMla> {
    if (o.runtime) return new WasmFlashMla(o.runtime, false);
    return new WasmFlashMla(await WasmRuntime.create({ threads: Math.max(1, Math.floor(o.threads ?? 1)) }), true);
  }

  get threads(): number {
    return this.runtime.threads;
  }

  /** One part per participant: the scheduler balances them, and each split costs a combine. */
  numParts(): number {
    return this.runtime.threads;
  }

  /**
   * A zeroed cache layer inside the wasm memory, so the kernel reads it in place (no staging copy).
   * Its heap block is freed when the returned `data` view is garbage-collected.
   */
  allocCache(dtype: KvCacheDType, numBlocks: number, numKvHeads: number, headDim: number, ropeDim = 64): KvCacheLayer {
    const h = this.runtime.heap;
    const rows = numBlocks * MLA_BLOCK_SIZE * numKvHeads;
    const shape = { numBlocks, numKvHeads, headDim };
    const bytes = dtype === 'fp8' ? rows * fp8BytesPerToken(headDim, ropeDim) : rows * headDim * (dtype === 'f32' ? 4 : 2);
    const p = h.allocZeroed(bytes);
    let layer: KvCacheLayer;
    switch (dtype) {
      case 'f32': layer = { ...shape, dtype, data: h.f32(p, rows * headDim) }; break;
      case 'bf16': layer = { ...shape, dtype, data: h.u16(p, rows * headDim) }; break;
      case 'fp8': layer = { ...shape, dtype, ropeDim, data: h.u8(p, bytes) }; break;
    }
    this.freer.register(layer.data, p);
    return layer;
  }

  /** Frees cache layers whose views were collected (unless the runtime is gone). */
  private readonly freer = new FinalizationRegistry<number>((p) => {
    if (!this.disposed) this.runtime.heap.free(p);
  });
  private disposed = false;

  private scratchFor(bytes: number): number[] {
    if (this.scratch.bytes < bytes) {
      for (const p of this.scratch.ptrs) this.runtime.heap.free(p);
      this.scratch = { bytes, ptrs: Array.from({ length: this.runtime.threads }, () => this.runtime.heap.alloc(bytes)) };
    }
    return this.scratch.ptrs;
  }

  flashMlaWithKvcache(a: FlashMlaArgs): FlashMlaResult {
    const plan = planFlashMla(a);
    const { b, sQ, hQ, hKv, g, rows: R, dQK, dV, maxBlocks, rowStride, numSlots } = plan;
    const out = a.out ?? new Float32Array(b * sQ * hQ * dV);
    const lse = a.lse ?? new Float32Array(b * hQ * sQ);
    if (b === 0) return { out, lse };
    const rt = this.runtime;
    const heap = rt.heap;
    // The cache: in place when it lives in wasm memory, else the blocks this batch uses, staged (in a
    // heap block of their own) and renumbered.
    const cache = a.kCache;
    let cachePtr: number;
    let cacheBlock = -1;
    let table = a.blockTable;
    if (heap.owns(cache.data)) {
      cachePtr = cache.data.byteOffset;
    } else {
      const bytesPerElem = cache.dtype === 'f32' ? 4 : cache.dtype === 'bf16' ? 2 : 1;
      const blockBytes = MLA_BLOCK_SIZE * hKv * rowStride * bytesPerElem;
      const remap = new Map<number, number>();
      table = new Int32Array(b * maxBlocks);
      for (let i = 0; i < b; i++) {
        const nb = Math.ceil(a.cacheSeqlens[i]! / MLA_BLOCK_SIZE);
        for (let j = 0; j < nb; j++) {
          const id = a.blockTable[i * maxBlocks + j]!;
          let k = remap.get(id);
          if (k === undefined) remap.set(id, (k = remap.size));
          table[i * maxBlocks + j] = k;
        }
      }
      cachePtr = cacheBlock = heap.alloc(Math.max(4, remap.size * blockBytes));
      const src = new Uint8Array(cache.data.buffer, cache.data.byteOffset, cache.data.byteLength);
      const dst = heap.u8(cachePtr, remap.size * blockBytes);
      for (const [id, k] of remap) dst.set(src.subarray(id * blockBytes, (id + 1) * blockBytes), k * blockBytes);
    }
    // Units [batch, blockBegin, blockEnd, kvHead, final, slot, 0, 0], grouped by part.
    const parts = metadataParts(a.meta);
    const partStart = new Int32Array(parts + 1);
    const units = new Int32Array(plan.items.length * hKv * UNIT_INTS);
    let n = 0;
    for (const it of plan.items) {
      for (let h = 0; h < hKv; h++, n++) {
        const o = n * UNIT_INTS;
        units[o] = it.batchIdx; units[o + 1] = it.blockBegin; units[o + 2] = it.blockEnd; units[o + 3] = h;
        units[o + 4] = it.noSplit ? 1 : 0; units[o + 5] = a.meta.numSplits[it.batchIdx]! + it.splitIdx;
      }
      partStart[it.part + 1] = n;
    }
    for (let p = 1; p <= parts; p++) partStart[p] = Math.max(partStart[p]!, partStart[p - 1]!);
    // Many folded rows (a prefill: sQ·g, e.g. 512 × 16): the scheduler's parts split keys, which a causal
    // prefill of one sequence leaves in one part (one thread). Split rows instead: every unit's rows in
    // chunks of the kernel's row tile, dealt out in order as contiguous ranges of equal estimated cost
    // (keys each row sees within the unit's blocks). Rows are independent, so results do not change.
    const threads = rt.threads;
    let rowSplit: { units: Int32Array; bounds: number[] } | null = null;
    // ROW_RANGES_PER_THREAD ranges per participant, taken at run time (flashMlaUnitRanges).
    if (threads > 1 && R > ROW_TILE) rowSplit = splitUnitRows(units, n, R, g, sQ, a.cacheSeqlens, plan.causal, threads * ROW_RANGES_PER_THREAD);
    // Everything else of the call in ONE reused scratch block (outputs, accumulators, staged inputs):
    // no allocator work per call, which matters at decode where a call is tens of microseconds.
    const sized = (bytes: number) => Math.ceil(Math.max(bytes, 4) / 64) * 64;
    const staged = (v: Float32Array | Int32Array) => (heap.owns(v) ? 0 : sized(v.byteLength));
    const outB = sized(out.byteLength), lseB = sized(lse.byteLength);
    const oAccB = sized(numSlots * hKv * R * dV * 4), lseAccB = sized(numSlots * hKv * R * 4);
    const unitTable = rowSplit ? rowSplit.units : units;
    const qB = staged(a.q), tableB = staged(table), seqB = staged(a.cacheSeqlens), unitsB = sized(unitTable.byteLength);
    const rangesB = rowSplit ? sized((rowSplit.bounds.length + 1) * 4) : 0;
    const base = this.arena.acquire(outB + lseB + oAccB + lseAccB + qB + tableB + seqB + unitsB + sized(PARAMS * 4) + rangesB);
    try {
      let at = base;
      const take = (bytes: number) => { const p = at; at += bytes; return p; };
      const put = (v: Float32Array | Int32Array, bytes: number) => {
        if (bytes === 0) return v.byteOffset;
        const p = take(bytes);
        heap.u8(p, v.byteLength).set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
        return p;
      };
      const outP = take(outB), lseP = take(lseB), oAccP = take(oAccB), lseAccP = take(lseAccB);
      const qP = put(a.q, qB), tableP = put(table, tableB), seqP = put(a.cacheSeqlens, seqB), unitsP = put(unitTable, unitsB);
      const paramsP = take(sized(PARAMS * 4));
      const params = heap.i32(paramsP, PARAMS);
      params.set([
        qP, cachePtr, tableP, seqP, outP, lseP, oAccP, lseAccP, unitsP,
        sQ, hQ, hKv, g, dQK, dV, maxBlocks, DTYPE_CODE[cache.dtype], rowStride, cache.dtype === 'fp8' ? cache.ropeDim : 0,
        plan.causal ? 1 : 0, 0, this.lut, R, plan.qkBegin,
      ]);
      heap.f32(paramsP, PARAMS)[20] = a.softmaxScale;
      const fm = rt.pool.exports('flashmla');
      const scratch = this.scratchFor(Number(fm.flashScratchBytes!(R, dQK, dV)));
      // Participant t runs parts [t·P/T, (t+1)·P/T): contiguous, so a request's splits mostly stay together.
      const T = rt.threads;
      if (T === 1) {
        if (partStart[parts]! > 0) fm.flashMlaUnits!(paramsP, 0, partStart[parts]!, scratch[0]!);
      } else if (rowSplit) {
        // [bounds..., counter]: the counter word zeroed after the bounds.
        const nb = rowSplit.bounds.length;
        const rangesP = take(rangesB);
        heap.i32(rangesP, nb + 1).set([...rowSplit.bounds, 0]);
        const counterP = rangesP + nb * 4;
        rt.pool.run('flashmla', 'flashMlaUnitRanges', (t) => (t < T ? [paramsP, rangesP, nb - 1, counterP, scratch[t]!] : null));
      } else {
        rt.pool.run('flashmla', 'flashMlaUnits', (t) => {
          const u0 = partStart[Math.floor((t * parts) / T)]!;
          const u1 = partStart[Math.floor(((t + 1) * parts) / T)]!;
          return u1 > u0 ? [paramsP, u0, u1, scratch[t]!] : null;
        });
      }
      out.set(heap.f32(outP, out.length));
      lse.set(heap.f32(lseP, lse.length));
      if (numSlots > b) combineSplits(plan, a.meta.numSplits, heap.f32(oAccP, numSlots * hKv * R * dV), heap.f32(lseAccP, numSlots * hKv * R), out, lse);
      return { out, lse };
    } finally {
      this.arena.release(base);
      if (cacheBlock >= 0) heap.free(cacheBlock);
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    if (this.ownsRuntime) await this.runtime.dispose();
  }
}
