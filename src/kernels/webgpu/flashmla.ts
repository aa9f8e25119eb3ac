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
import { FlashMlaError, type FlashMlaArgs, type FlashMlaKernel, type FlashMlaResult } from '../flashmla/types.ts';
import { numSmParts } from '../flashmla/metadata.ts';
import { planFlashMla } from '../flashmla/validate.ts';
import { emptyStorage, uploadParams, uploadStorage, withTemps, type ParamField } from './buffers.ts';
import { closeDevice, getDevice } from './device.ts';
import { MLA_WG, mlaCombineWgsl, mlaKey, mlaMainWgsl, mlaRowsPerGroup, type MlaVariant } from './flashmla-shaders.ts';
import { getPipeline, runPasses, type Pass } from './pipelines.ts';
import { grid } from './wgsl.ts';

/**
 * Scheduler parts for the GPU: FlashMLA's num_sm_parts for a device with this many independent compute
 * units. llvmpipe has 2 cores, but more parts also bound the work of one workgroup; 16 is a middle ground.
 */
const VIRTUAL_SMS = 16;

export async function flashMlaWithKvcacheWebGpu(a: FlashMlaArgs): Promise<FlashMlaResult> {
  const plan = planFlashMla(a);
  const { b, sQ, hQ, hKv, g, rows, dQK, dV, maxBlocks } = plan;
  const out = a.out ?? new Float32Array(b * sQ * hQ * dV);
  const lse = a.lse ?? new Float32Array(b * hQ * sQ);
  if (b === 0) return { out, lse };
  const ctx = await getDevice();
  const R = mlaRowsPerGroup(dQK, ctx.limits.maxComputeWorkgroupStorageSize);
  const v: MlaVariant = { dtype: a.kCache.dtype, dQK, dpt: Math.ceil(dV / MLA_WG), rowsPerGroup: R };
  const main = await getPipeline(ctx, mlaKey(v), () => mlaMainWgsl(v));
  const combine = await getPipeline(ctx, 'flashmla:combine', mlaCombineWgsl);
  const tiles = Math.ceil(rows / R);
  const items = new Int32Array(Math.max(1, plan.items.length) * 4);
  plan.items.forEach((it, i) => {
    items.set([it.batchIdx, it.blockBegin, it.blockEnd, it.noSplit ? -1 : a.meta.numSplits[it.batchIdx]! + it.splitIdx], i * 4);
  });
  const cache = a.kCache;
  const nope = cache.dtype === 'fp8' ? dQK - cache.ropeDim : 0;
  const strideW = cache.dtype === 'fp8' ? plan.rowStride / 4 : 0;
  if (cache.dtype === 'fp8' && plan.rowStride % 4 !== 0) {
    throw new FlashMlaError('bad-cache', `fp8 token stride ${plan.rowStride} B is not a multiple of 4`);
  }
  const fields: ParamField[] = [
    ['u32', b], ['u32', sQ], ['u32', hQ], ['u32', hKv],
    ['u32', g], ['u32', rows], ['u32', dQK], ['u32', dV],
    ['u32', maxBlocks], ['u32', plan.causal ? 1 : 0], ['f32', a.softmaxScale], ['u32', plan.items.length],
    ['u32', tiles], ['u32', nope], ['u32', strideW], ['u32', 0],
    ['f32', Infinity], ['f32', -Infinity], ['u32', 0], ['u32', 0],
  ];
  return withTemps(async (t) => {
    const up = (data: ArrayBufferView, label: string) => { const buf = uploadStorage(ctx, data, `flashmla:${label}`); t.push(buf); return buf; };
    const empty = (bytes: number, label: string) => { const buf = emptyStorage(ctx, bytes, `flashmla:${label}`); t.push(buf); return buf; };
    const params = uploadParams(ctx, fields, 'flashmla:params');
    t.push(params);
    const outB = empty(out.length * 4, 'out');
    const lseB = empty(lse.length * 4, 'lse');
    const slots = plan.numSlots;
    const oAcc = empty(slots * hKv * rows * dV * 4, 'oAcc');
    const lseAcc = empty(slots * hKv * rows * 4, 'lseAcc');
    const numSplits = up(a.meta.numSplits, 'numSplits');
    const passes: Pass[] = [{
      pipeline: main,
      buffers: [params, up(a.q, 'q'), up(cache.data, 'kCache'), up(a.blockTable, 'blockTable'), up(a.cacheSeqlens, 'seqlens'),
        up(items, 'items'), outB, lseB, oAcc, lseAcc],
      groups: grid(plan.items.length * hKv * tiles),
    }];
    if (slots > 0) passes.push({ pipeline: combine, buffers: [params, numSplits, oAcc, lseAcc, outB, lseB], groups: grid(b * hKv * rows) });
    const [ob, lb] = await runPasses(ctx, 'flashmla', passes, [{ buffer: outB, byteLength: out.length * 4 }, { buffer: lseB, byteLength: lse.length * 4 }]);
    out.set(new Float32Array(ob!));
    lse.set(new Float32Array(lb!));
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
