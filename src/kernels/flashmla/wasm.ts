// FlashMLA on WebAssembly SIMD128 with worker threads over one shared memory: the scheduler's parts are
// dealt to the pool's participants (contiguous ranges of parts, which FlashMLA's balancing made equal in
// cost), each runs the main kernel (src/kernels/wasm/assembly/flashmla.ts) over its (request, kv head,
// block range) units, and the split partials are merged by the LSE combine (combine.ts).
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/kernels/splitkv_mla.cu (grid =
// (row blocks, h_kv, num_sm_parts)) and csrc/kernels/mla_combine.cu.
import { FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { WasmRuntime } from '../wasm/runtime.ts';
import { combineSplits } from './combine.ts';
import { fp8BytesPerToken, MLA_BLOCK_SIZE, type FlashMlaArgs, type FlashMlaResult, type KvCacheDType, type KvCacheLayer, type SyncFlashMlaKernel } from './types.ts';
import { planFlashMla } from './validate.ts';
import { metadataParts } from './metadata.ts';

const PARAMS = 24;
const UNIT_INTS = 8;
const DTYPE_CODE: Record<KvCacheDType, number> = { f32: 0, bf16: 1, fp8: 2 };

export interface WasmFlashMlaOptions {
  threads?: number;
  /** Share an existing wasm runtime (its memory, heap and pool) instead of starting one. */
  runtime?: WasmRuntime;
}

export class WasmFlashMla implements SyncFlashMlaKernel {
  readonly backend = 'wasm';
  private readonly lut: number;
  private scratch: { bytes: number; ptrs: number[] } = { bytes: 0, ptrs: [] };

  private constructor(readonly runtime: WasmRuntime, private readonly ownsRuntime: boolean) {
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
    const blocks: number[] = [];
    const alloc = (bytes: number) => {
      const p = heap.alloc(Math.max(bytes, 4));
      blocks.push(p);
      return p;
    };
    const input = (src: Float32Array | Int32Array | Uint16Array | Uint8Array) => {
      if (heap.owns(src)) return src.byteOffset;
      const p = alloc(src.byteLength);
      heap.u8(p, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
      return p;
    };
    try {
      // The cache: in place when it lives in wasm memory, else the blocks this batch uses, staged and renumbered.
      const cache = a.kCache;
      let cachePtr: number;
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
        cachePtr = alloc(remap.size * blockBytes);
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
          units.set([it.batchIdx, it.blockBegin, it.blockEnd, h, it.noSplit ? 1 : 0, a.meta.numSplits[it.batchIdx]! + it.splitIdx, 0, 0], n * UNIT_INTS);
        }
        partStart[it.part + 1] = n;
      }
      for (let p = 1; p <= parts; p++) partStart[p] = Math.max(partStart[p]!, partStart[p - 1]!);
      const outP = alloc(out.byteLength);
      const lseP = alloc(lse.byteLength);
      const oAccP = alloc(numSlots * hKv * R * dV * 4);
      const lseAccP = alloc(numSlots * hKv * R * 4);
      const params = new Int32Array(PARAMS);
      params.set([
        input(a.q), cachePtr, input(table), input(a.cacheSeqlens), outP, lseP, oAccP, lseAccP, input(units),
        sQ, hQ, hKv, g, dQK, dV, maxBlocks, DTYPE_CODE[cache.dtype], rowStride, cache.dtype === 'fp8' ? cache.ropeDim : 0,
        plan.causal ? 1 : 0, 0, this.lut, R,
      ]);
      new Float32Array(params.buffer)[20] = a.softmaxScale;
      const paramsP = input(params);
      const fm = rt.pool.exports('flashmla');
      const scratch = this.scratchFor(Number(fm.flashScratchBytes!(R, dQK, dV)));
      // Participant t runs parts [t·P/T, (t+1)·P/T): contiguous, so a request's splits mostly stay together.
      const T = rt.threads;
      rt.pool.run('flashmla', 'flashMlaUnits', (t) => {
        const u0 = partStart[Math.floor((t * parts) / T)]!;
        const u1 = partStart[Math.floor(((t + 1) * parts) / T)]!;
        return u1 > u0 ? [paramsP, u0, u1, scratch[t]!] : null;
      });
      out.set(heap.f32(outP, out.length));
      lse.set(heap.f32(lseP, lse.length));
      if (numSlots > b) combineSplits(plan, a.meta.numSplits, heap.f32(oAccP, numSlots * hKv * R * dV), heap.f32(lseAccP, numSlots * hKv * R), out, lse);
      return { out, lse };
    } finally {
      for (const p of blocks) heap.free(p);
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    if (this.ownsRuntime) await this.runtime.dispose();
  }
}
