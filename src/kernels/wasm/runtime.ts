// The wasm runtime of one backend instance: the compiled modules (committed .wasm files), ONE shared
// memory, its heap and the thread pool. Other wasm kernels (e.g. FlashMLA) add their module to
// WASM_MODULES and share all of it; see pool.ts for how to add a kernel.
import { readFileSync } from 'node:fs';
import { WasmHeap } from './heap.ts';
import { WasmPool } from './pool.ts';

/** Module name -> committed binary (built by scripts/build-wasm.mjs from WASM_ENTRIES there). */
export const WASM_MODULES: Record<string, URL> = {
  kernels: new URL('./kernels.wasm', import.meta.url),
  flashmla: new URL('./flashmla.wasm', import.meta.url),
};

export class WasmUnsupportedError extends Error {
  override name = 'WasmUnsupportedError';
  constructor(readonly feature: string) {
    super(`this JavaScript engine lacks WebAssembly ${feature}`);
  }
}

let compiled: Record<string, WebAssembly.Module> | null = null;

/** Compiles every module once per process (workers receive the compiled modules). */
export function compiledModules(): Record<string, WebAssembly.Module> {
  if (compiled) return compiled;
  if (typeof SharedArrayBuffer === 'undefined') throw new WasmUnsupportedError('threads (SharedArrayBuffer)');
  const out: Record<string, WebAssembly.Module> = {};
  for (const [name, url] of Object.entries(WASM_MODULES)) {
    const bytes = readFileSync(url);
    if (!WebAssembly.validate(bytes)) throw new WasmUnsupportedError(`SIMD/threads (module ${name} does not validate)`);
    out[name] = new WebAssembly.Module(bytes);
  }
  compiled = out;
  return out;
}

export interface RuntimeOptions {
  threads: number;
  /** Initial memory in bytes (grows on demand up to 4 GiB). */
  initialBytes?: number;
  opTimeoutMs?: number;
}

export class WasmRuntime {
  private constructor(readonly memory: WebAssembly.Memory, readonly heap: WasmHeap, readonly pool: WasmPool) {}

  static async create(opts: RuntimeOptions): Promise<WasmRuntime> {
    const modules = compiledModules();
    const initialPages = Math.max(16, Math.ceil((opts.initialBytes ?? 16 << 20) / 65536));
    const memory = new WebAssembly.Memory({ initial: initialPages, maximum: 65536, shared: true });
    const pool = await WasmPool.create({
      threads: opts.threads, memory, modules, ...(opts.opTimeoutMs !== undefined ? { opTimeoutMs: opts.opTimeoutMs } : {}),
    });
    let base = 0;
    for (const name of Object.keys(modules)) {
      const hb = pool.exports(name).heapBase;
      if (hb) base = Math.max(base, Number(hb()));
    }
    // Modules share the low static area; 64 KiB is reserved for it (checked below).
    if (base > 65536) throw new Error(`wasm static data (${base} bytes) exceeds the reserved 64 KiB`);
    return new WasmRuntime(memory, new WasmHeap(memory, 65536), pool);
  }

  get threads(): number {
    return this.pool.threads;
  }

  async dispose(): Promise<void> {
    await this.pool.dispose();
  }
}
