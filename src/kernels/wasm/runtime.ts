// The wasm runtime of one backend instance: the compiled modules (committed .wasm files), ONE shared
// memory, its heap and the thread pool. Other wasm kernels (e.g. FlashMLA) add their module to
// WASM_MODULES and share all of it; see pool.ts for how to add a kernel.
// SIMD level: each runtime runs either the plain SIMD128 binaries or, for modules listed in WASM_RELAXED,
// their relaxed-SIMD builds (fused multiply-adds: faster, but f32 rounding differs from the plain build
// wherever a product is inexact). Default: relaxed where the engine supports it (Node 20 behind a V8
// flag switched on here; Node 22+ natively), else plain; SEEKD_WASM_SIMD=plain|relaxed pins it and
// RuntimeOptions.simd chooses per runtime (the tests run both).
// Binaries: Node reads the files next to this module; in a browser page (web/gpu: this module bundled,
// the URLs relative to the bundle) WasmRuntime.create fetches them first (loadWasmBinaries), and the
// SIMD level is the same feature detection (WebAssembly.validate of the relaxed builds).
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { WasmHeap } from './heap.ts';
import { WasmPool } from './pool.ts';

/** Module name -> committed binary (built by scripts/build-wasm.mjs from WASM_ENTRIES there). */
export const WASM_MODULES: Record<string, URL> = {
  kernels: new URL('./kernels.wasm', import.meta.url),
  flashmla: new URL('./flashmla.wasm', import.meta.url),
};

/**
 * Relaxed-SIMD builds: module name -> binary loaded INSTEAD of WASM_MODULES[name] when the runtime runs at
 * SIMD level 'relaxed' (same sources built with --enable relaxed-simd: f32 multiply-adds fused).
 */
export const WASM_RELAXED: Record<string, URL> = {
  kernels: new URL('./kernels-relaxed.wasm', import.meta.url),
  flashmla: new URL('./flashmla-relaxed.wasm', import.meta.url),
};

/** 'relaxed': the WASM_RELAXED binaries (fused multiply-adds); 'plain': SIMD128 only. */
export type SimdLevel = 'relaxed' | 'plain';

/** Environment override of the default SIMD level: SEEKD_WASM_SIMD=plain|relaxed|auto (default auto). */
export const SIMD_ENV = 'SEEKD_WASM_SIMD';

export class WasmUnsupportedError extends Error {
  override name = 'WasmUnsupportedError';
  constructor(readonly feature: string) {
    super(`this JavaScript engine lacks WebAssembly ${feature}`);
  }
}

/** Binaries fetched by loadWasmBinaries (URLs other than file:, i.e. in a browser), by URL. */
const fetched = new Map<string, Uint8Array>();

/** A binary's bytes: a file: URL is read from disk (Node); others must have been fetched (loadWasmBinaries). */
function wasmBytes(url: URL): Uint8Array {
  if (url.protocol === 'file:') return readFileSync(url);
  const b = fetched.get(url.href);
  if (!b) throw new Error(`wasm binary ${url.href} is not loaded (await loadWasmBinaries() first)`);
  return b;
}

/**
 * Fetches every binary whose URL is not a file: URL (a browser page, where this module's URL is the
 * bundle's) and keeps the bytes; a no-op in Node. WasmRuntime.create calls it.
 */
export async function loadWasmBinaries(): Promise<void> {
  const urls = [...Object.values(WASM_MODULES), ...Object.values(WASM_RELAXED)].filter((u) => u.protocol !== 'file:' && !fetched.has(u.href));
  await Promise.all(urls.map(async (u) => {
    const res = await fetch(u);
    if (!res.ok) throw new Error(`cannot fetch wasm binary ${u.href}: HTTP ${res.status}`);
    fetched.set(u.href, new Uint8Array(await res.arrayBuffer()));
  }));
}

/**
 * Whether this engine can create the shared memory every module imports. Node, and Chromium even in a
 * page that is not cross-origin isolated (no SharedArrayBuffer global), can; other browsers may not.
 */
function sharedMemoryOk(): boolean {
  if (typeof SharedArrayBuffer !== 'undefined') return true;
  try {
    return new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer !== undefined;
  } catch {
    return false;
  }
}

let relaxedOk: boolean | null = null;

/**
 * Whether this engine runs the relaxed-SIMD binaries. Node 22+ (V8 11.4+) has relaxed SIMD on by default;
 * Node 20 ships it behind --experimental-wasm-relaxed-simd, which is switched on here, once, before the
 * first relaxed module is validated. V8 flags are process-wide, so pool workers (which receive the
 * compiled modules) see it too; where the flag is unknown or has no effect, the plain build is used.
 */
export function relaxedSimdSupported(): boolean {
  if (relaxedOk !== null) return relaxedOk;
  const all = Object.values(WASM_RELAXED).map((u) => wasmBytes(u));
  const ok = () => all.every((b) => WebAssembly.validate(b));
  if (!ok()) {
    try { setFlagsFromString('--experimental-wasm-relaxed-simd'); } catch { /* not V8, or the flag is gone */ }
  }
  relaxedOk = ok();
  return relaxedOk;
}

/** The level 'auto' resolves to: SEEKD_WASM_SIMD if set to plain/relaxed, else relaxed where supported. */
export function defaultSimdLevel(): SimdLevel {
  const env = globalThis.process?.env[SIMD_ENV];
  if (env === 'plain' || env === 'relaxed') return env;
  if (env !== undefined && env !== '' && env !== 'auto') throw new RangeError(`${SIMD_ENV} must be plain, relaxed or auto, not '${env}'`);
  return relaxedSimdSupported() ? 'relaxed' : 'plain';
}

const compiled = new Map<SimdLevel, Record<string, WebAssembly.Module>>();
/** Compiled binaries by URL: a module without a relaxed build is compiled once for both levels. */
const byUrl = new Map<string, WebAssembly.Module>();

/** Compiles every module once per process and SIMD level (workers receive the compiled modules). */
export function compiledModules(level: SimdLevel = defaultSimdLevel()): Record<string, WebAssembly.Module> {
  const hit = compiled.get(level);
  if (hit) return hit;
  if (!sharedMemoryOk()) throw new WasmUnsupportedError('threads (shared memory)');
  if (level === 'relaxed' && !relaxedSimdSupported()) throw new WasmUnsupportedError('relaxed SIMD');
  const out: Record<string, WebAssembly.Module> = {};
  for (const [name, plainUrl] of Object.entries(WASM_MODULES)) {
    const url = (level === 'relaxed' ? WASM_RELAXED[name] : undefined) ?? plainUrl;
    let mod = byUrl.get(url.href);
    if (!mod) {
      const bytes = wasmBytes(url);
      if (!WebAssembly.validate(bytes)) throw new WasmUnsupportedError(`SIMD/threads (module ${name} does not validate)`);
      mod = new WebAssembly.Module(bytes);
      byUrl.set(url.href, mod);
    }
    out[name] = mod;
  }
  compiled.set(level, out);
  return out;
}

export interface RuntimeOptions {
  threads: number;
  /** SIMD level of the kernels (default: defaultSimdLevel()); 'relaxed' throws WasmUnsupportedError where unsupported. */
  simd?: SimdLevel | 'auto';
  /** Initial memory in bytes (grows on demand up to 4 GiB). */
  initialBytes?: number;
  opTimeoutMs?: number;
}

export class WasmRuntime {
  private constructor(readonly memory: WebAssembly.Memory, readonly heap: WasmHeap, readonly pool: WasmPool,
    /** The SIMD level whose binaries this runtime runs. */
    readonly simd: SimdLevel) {}

  static async create(opts: RuntimeOptions): Promise<WasmRuntime> {
    await loadWasmBinaries();
    const simd = opts.simd === undefined || opts.simd === 'auto' ? defaultSimdLevel() : opts.simd;
    const modules = compiledModules(simd);
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
    return new WasmRuntime(memory, new WasmHeap(memory, 65536), pool, simd);
  }

  get threads(): number {
    return this.pool.threads;
  }

  async dispose(): Promise<void> {
    await this.pool.dispose();
  }
}
