// FlashMLA on WebGPU: flash_mla_with_kvcache (paged absorbed-MLA decode attention) in WGSL.
// Reference: https://github.com/deepseek-ai/FlashMLA (csrc/kernels/splitkv_mla.cu, mla_combine.cu,
// flash_mla/flash_mla_interface.py); the contract is src/kernels/flashmla/types.ts.
//
// Parallelization (flashmla-shaders.ts): the scheduler's work items (request, block range) from
// getMlaMetadata are expanded on the CPU and uploaded; the main kernel runs one workgroup per
// (work item, kv head, tile of ≤ 8 folded query rows) with an online softmax over 64-key blocks and writes
// unsplit requests straight to out/lse and split ones to partial slots; the combine kernel merges the
// partials by LSE. Both run in one submit. f32 accumulation throughout (FlashMLA: f32 accumulators too).
//
// The K cache is uploaded on every call (the engine's cache lives in host memory); q, block table and
// seqlens likewise. Arguments are validated by the shared planFlashMla before any GPU work.
//
// Storage limits (split.ts): a cache larger than one binding is bound as several parts of whole blocks,
// one main dispatch per part, and the parts' partials are merged by the LSE combine (the keys of a
// request are then summed in a different order than unsplit: equal within f32 rounding, not bitwise);
// a batch whose q / out / partials exceed a binding runs in request chunks (bitwise equal). Limits: the
// partial slots of one request (its sub-items x hKv x sQ·hQ/hKv x dV f32: 256 KiB each for V3 decode) must
// fit one binding, else WebGpuLimitError (flashmla:oAcc); and each sub-item walks its item's whole block
// range, skipping other parts' blocks, so the walk costs grow with the number of parts (llvmpipe: 131
// blocks in 3 parts +8%, in 9 parts 2.1x).
import { FlashMlaError, MLA_BLOCK_SIZE, type FlashMlaArgs, type FlashMlaKernel, type FlashMlaResult } from '../flashmla/types.ts';
import { numSmParts } from '../flashmla/metadata.ts';
import { planFlashMla } from '../flashmla/validate.ts';
import { emptyStorage, uploadParams, uploadStorage, withTemps, type ParamField } from './buffers.ts';
import { closeDevice, getDevice } from './device.ts';
import { MLA_WG, mlaCombineWgsl, mlaKey, mlaMainWgsl, mlaRowsPerGroup, type MlaVariant } from './flashmla-shaders.ts';
import { getPipeline, runPasses, type Pass, type Readback } from './pipelines.ts';
import { sizeLimits, splitEven, tooLarge, type Range } from './split.ts';
import { grid } from './wgsl.ts';

/**
 * Scheduler parts for the GPU: FlashMLA's num_sm_parts for a device with this many independent compute
 * units. llvmpipe has 2 cores, but more parts also bound the work of one workgroup; 16 is a middle ground.
 */
const VIRTUAL_SMS = 16;

/** A scheduler work item restricted to one cache part: [local request, first block, end block, slot or -1]. */
type SubItem = readonly [number, number, number, number];

export async function flashMlaWithKvcacheWebGpu(a: FlashMlaArgs): Promise<FlashMlaResult> {
  const plan = planFlashMla(a);
  const { b, sQ, hQ, hKv, g, rows, dQK, dV, maxBlocks } = plan;
  const out = a.out ?? new Float32Array(b * sQ * hQ * dV);
  const lse = a.lse ?? new Float32Array(b * hQ * sQ);
  if (b === 0) return { out, lse };
  const ctx = await getDevice();
  const lim = sizeLimits(ctx);
  const R = mlaRowsPerGroup(dQK, ctx.limits.maxComputeWorkgroupStorageSize);
  const v: MlaVariant = { dtype: a.kCache.dtype, dQK, dpt: Math.ceil(dV / MLA_WG), rowsPerGroup: R };
  const main = await getPipeline(ctx, mlaKey(v), () => mlaMainWgsl(v));
  const combine = await getPipeline(ctx, 'flashmla:combine', mlaCombineWgsl);
  const tiles = Math.ceil(rows / R);
  const cache = a.kCache;
  const nope = cache.dtype === 'fp8' ? dQK - cache.ropeDim : 0;
  const strideW = cache.dtype === 'fp8' ? plan.rowStride / 4 : 0;
  if (cache.dtype === 'fp8' && plan.rowStride % 4 !== 0) {
    throw new FlashMlaError('bad-cache', `fp8 token stride ${plan.rowStride} B is not a multiple of 4`);
  }

  // Cache parts: ranges of whole 64-token blocks, each its own binding. A work item whose blocks lie in
  // several parts becomes one sub-item per part it touches (each skips the other parts' blocks); a request
  // with more than one sub-item has its partials merged by the combine kernel, exactly like FlashMLA's
  // splits (an unsplit cache gives back the scheduler's own items).
  const blockElems = MLA_BLOCK_SIZE * hKv * plan.rowStride;
  const blockBytes = blockElems * cache.data.BYTES_PER_ELEMENT;
  if (blockBytes > lim.storage) throw tooLarge(lim, 'flashmla:kCache', 'one 64-token cache block', blockBytes);
  const parts: Range[] = cache.numBlocks > 0 ? splitEven(cache.numBlocks, Math.floor(lim.storage / blockBytes), 1) : [[0, 0]];
  const perPart = parts.length > 0 ? parts[0]![1] - parts[0]![0] : 1;
  const subOf: { bi: number; part: number; begin: number; end: number }[][] = Array.from({ length: b }, () => []);
  for (const it of plan.items) {
    const bi = it.batchIdx;
    const used = Math.min(it.blockEnd, Math.ceil(a.cacheSeqlens[bi]! / MLA_BLOCK_SIZE));
    const touched = new Set<number>();
    for (let j = it.blockBegin; j < used; j++) touched.add(Math.floor(a.blockTable[bi * maxBlocks + j]! / perPart));
    if (touched.size === 0) touched.add(0); // no keys: still writes the row's empty result (0 / +inf)
    for (const part of [...touched].sort((x, y) => x - y)) subOf[bi]!.push({ bi, part, begin: it.blockBegin, end: it.blockEnd });
  }

  // Request chunks: consecutive requests whose q, out, lse and partial slots fit the storage limit.
  const perReq = (i: number): [string, number][] => {
    const slots = subOf[i]!.length > 1 ? subOf[i]!.length : 0;
    return [['flashmla:q', sQ * hQ * dQK * 4], ['flashmla:out', sQ * hQ * dV * 4], ['flashmla:lse', hQ * sQ * 4],
      ['flashmla:oAcc', slots * hKv * rows * dV * 4], ['flashmla:lseAcc', slots * hKv * rows * 4],
      ['flashmla:blockTable', maxBlocks * 4], ['flashmla:items', 16 * subOf[i]!.length]];
  };
  const chunks: Range[] = [];
  let sums: number[] = [];
  for (let i = 0; i < b; i++) {
    const need = perReq(i);
    for (const [tensor, bytes] of need) if (bytes > lim.storage) throw tooLarge(lim, tensor, 'one request', bytes);
    const last = chunks[chunks.length - 1];
    if (last && need.every(([, bytes], j) => sums[j]! + bytes <= lim.storage)) {
      chunks[chunks.length - 1] = [last[0], i + 1];
      sums = sums.map((s, j) => s + need[j]![1]);
    } else {
      chunks.push([i, i + 1]);
      sums = need.map(([, bytes]) => bytes);
    }
  }

  return withTemps(async (t) => {
    const up = (data: ArrayBufferView, label: string) => { const buf = uploadStorage(ctx, data, `flashmla:${label}`); t.push(buf); return buf; };
    const empty = (bytes: number, label: string) => { const buf = emptyStorage(ctx, bytes, `flashmla:${label}`); t.push(buf); return buf; };
    const cacheBufs = new Map<number, GPUBuffer>();
    const cachePart = (pi: number) => {
      let buf = cacheBufs.get(pi);
      const [lo, hi] = parts[pi]!;
      if (!buf) cacheBufs.set(pi, (buf = up(cache.data.subarray(lo * blockElems, hi * blockElems), parts.length > 1 ? `kCache[${lo}:${hi}]` : 'kCache')));
      return buf;
    };
    const passes: Pass[] = [];
    const readbacks: Readback[] = [];
    for (const [b0, b1] of chunks) {
      const bc = b1 - b0;
      // Slots and the combine's prefix sums, local to the chunk.
      const numSplits = new Int32Array(bc + 1);
      const byPart = new Map<number, SubItem[]>();
      for (let i = b0; i < b1; i++) {
        const subs = subOf[i]!;
        const s0 = numSplits[i - b0]!;
        numSplits[i - b0 + 1] = s0 + (subs.length > 1 ? subs.length : 0);
        subs.forEach((sub, j) => {
          const list = byPart.get(sub.part) ?? [];
          list.push([i - b0, sub.begin, sub.end, subs.length > 1 ? s0 + j : -1]);
          byPart.set(sub.part, list);
        });
      }
      const slots = numSplits[bc]!;
      const fields = (numItems: number, [blo, bhi]: Range): ParamField[] => [
        ['u32', bc], ['u32', sQ], ['u32', hQ], ['u32', hKv],
        ['u32', g], ['u32', rows], ['u32', dQK], ['u32', dV],
        ['u32', maxBlocks], ['u32', plan.causal ? 1 : 0], ['f32', a.softmaxScale], ['u32', numItems],
        ['u32', tiles], ['u32', nope], ['u32', strideW], ['u32', plan.qkBegin],
        ['f32', Infinity], ['f32', -Infinity], ['u32', blo], ['u32', bhi],
      ];
      const paramsFor = (numItems: number, r: Range) => {
        const buf = uploadParams(ctx, fields(numItems, r), 'flashmla:params');
        t.push(buf);
        return buf;
      };
      const outB = empty(bc * sQ * hQ * dV * 4, 'out');
      const lseB = empty(bc * hQ * sQ * 4, 'lse');
      const oAcc = empty(slots * hKv * rows * dV * 4, 'oAcc');
      const lseAcc = empty(slots * hKv * rows * 4, 'lseAcc');
      const q = up(a.q.subarray(b0 * sQ * hQ * dQK, b1 * sQ * hQ * dQK), 'q');
      const table = up(a.blockTable.subarray(b0 * maxBlocks, b1 * maxBlocks), 'blockTable');
      const seqlens = up(a.cacheSeqlens.subarray(b0, b1), 'seqlens');
      for (const [pi, subs] of [...byPart].sort(([x], [y]) => x - y)) {
        const items = new Int32Array(subs.length * 4);
        subs.forEach((it, i) => items.set(it, i * 4));
        passes.push({
          pipeline: main,
          buffers: [paramsFor(subs.length, parts[pi]!), q, cachePart(pi), table, seqlens, up(items, 'items'), outB, lseB, oAcc, lseAcc],
          groups: grid(subs.length * hKv * tiles),
        });
      }
      if (slots > 0) {
        passes.push({ pipeline: combine, buffers: [paramsFor(0, [0, 0]), up(numSplits, 'numSplits'), oAcc, lseAcc, outB, lseB], groups: grid(bc * hKv * rows) });
      }
      readbacks.push({ buffer: outB, byteLength: bc * sQ * hQ * dV * 4 }, { buffer: lseB, byteLength: bc * hQ * sQ * 4 });
    }
    const got = await runPasses(ctx, 'flashmla', passes, readbacks);
    chunks.forEach(([b0], ci) => {
      out.set(new Float32Array(got[2 * ci]!), b0 * sQ * hQ * dV);
      lse.set(new Float32Array(got[2 * ci + 1]!), b0 * hQ * sQ);
    });
    return { out, lse };
  });
}

/** The WebGPU FlashMLA kernel (FlashMlaKernel contract; results arrive asynchronously). */
export function createWebGpuFlashMla(): FlashMlaKernel {
  return {
    backend: 'webgpu',
    threads: 1,
    numParts: (_b, sQ, hQ, hKv) => numSmParts(VIRTUAL_SMS, (sQ * hQ) / hKv, hKv),
    flashMlaWithKvcache: flashMlaWithKvcacheWebGpu,
    dispose: closeDevice,
  };
}
