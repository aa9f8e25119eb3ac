// FlashMLA port: public entry. `loadFlashMla(backend)` returns the kernel of a backend; the scheduler
// (`getMlaMetadata`), cache formats and types are backend-independent.
// Reference: https://github.com/deepseek-ai/FlashMLA (flash_mla/flash_mla_interface.py).
import { createRefFlashMla } from './ref.ts';
import type { FlashMlaKernel } from './types.ts';
import { WasmFlashMla, type WasmFlashMlaOptions } from './wasm.ts';

export * from './types.ts';
export { getMlaMetadata, numSmParts, partWorkItems, allWorkItems, validateMetadata, type MlaWorkItem } from './metadata.ts';
export { planFlashMla, keyLimit, type FlashMlaPlan } from './validate.ts';
export { combineSplits } from './combine.ts';
export { flashMlaWithKvcacheRef, createRefFlashMla } from './ref.ts';
export { WasmFlashMla, type WasmFlashMlaOptions } from './wasm.ts';
export { PagedLatentCache, KvCacheFullError, KvCacheSequenceError, type PagedLatentCacheOptions } from './paged-cache.ts';
export { allocCacheLayer, readRow, writeRow, fp8TileScale, validateCacheLayer } from './kv-format.ts';

export class UnknownFlashMlaBackendError extends Error {
  override name = 'UnknownFlashMlaBackendError';
  constructor(readonly backend: string) {
    super(`no FlashMLA kernel for backend "${backend}" (available: ${FLASH_MLA_BACKENDS.join(', ')})`);
  }
}

export const FLASH_MLA_BACKENDS = ['ref', 'wasm', 'webgpu'] as const;

/**
 * The FlashMLA kernel of a backend: 'ref' (plain TS, f64), 'wasm' (SIMD128, `threads` participants
 * over one shared memory; pass `runtime` to share a wasm backend's memory and pool) or 'webgpu' (WGSL).
 */
export async function loadFlashMla(backend: string, opts: WasmFlashMlaOptions = {}): Promise<FlashMlaKernel> {
  switch (backend) {
    case 'ref': return createRefFlashMla();
    case 'wasm': return WasmFlashMla.create(opts);
    // Imported on demand so that loading FlashMLA does not load Dawn.
    case 'webgpu': return (await import('../webgpu/flashmla.ts')).createWebGpuFlashMla();
    default: throw new UnknownFlashMlaBackendError(backend);
  }
}
