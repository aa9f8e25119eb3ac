// Thread pool for the WebAssembly kernels: N participants (the calling thread + N-1 worker threads)
// run exported wasm functions over ONE shared WebAssembly.Memory, synchronously.
//
// How it works
//   * Every participant instantiates the same compiled modules (kernels.wasm, and any other module
//     built by scripts/build-wasm.mjs) against the same memory, so a pointer means the same bytes
//     everywhere. Only the calling thread allocates (heap.ts) and grows the memory.
//   * `run(module, fn, argsFor)` writes each participant's arguments (numbers: pointers, sizes,
//     floats; at most MAX_ARGS) into a shared f64 table, bumps a sequence number and wakes the workers
//     (Atomics.notify). Each worker calls `fn(...args)` on its own instance, adds 1 to DONE and notifies.
//     The calling thread runs participant 0's share itself, then waits for DONE (short spin, then
//     Atomics.wait). Workers poll the sequence word for a moment after each op (the next one usually
//     follows within microseconds; a futex wake costs 15-140 µs on a VM), then sleep in Atomics.wait,
//     so they do not compete with the JS thread for the CPU while idle.
//   * Failures are typed, never a hang: a wasm trap or JS error in a worker is reported back and thrown
//     here as WasmWorkerError; a worker that exits marks itself dead (process 'exit' in the worker) and
//     the wait throws WasmWorkerDiedError; `opTimeoutMs` bounds every wait (WasmPoolTimeoutError). After a
//     worker death the pool is broken and every later run throws.
//
// Adding a kernel
//   1. Write it in AssemblyScript: either export it from src/kernels/wasm/assembly/kernels.ts, or make a
//      new entry file (e.g. assembly/flashmla.ts) and list it in WASM_ENTRIES in scripts/build-wasm.mjs
//      and in WASM_MODULES (./modules.ts). Take pointers (byte offsets) and sizes; keep no static data
//      that two instances would disagree on (globals are per participant); do not allocate in wasm.
//   2. `npm run build:wasm` and commit the .wasm (the build test checks it is current).
//   3. From TypeScript, get the shared runtime (`WasmRuntime.create`, or `kernels.runtime` of a loaded
//      wasm backend), stage inputs with `runtime.heap` (alloc/free, f32/u8 views), then either call
//      `runtime.pool.exports(module).fn(...)` on the calling thread, or split the work with
//      `runtime.pool.run(module, 'fn', (t) => [...args for participant t] | null)` (null: nothing to do).
import { spawnWorker } from '../../platform/worker.ts';
import type { Worker } from 'node:worker_threads';

export const MAX_ARGS = 16;
// Control words (Int32Array over a SharedArrayBuffer).
const SEQ = 0, DONE = 1, STOP = 2, FN = 3, STATE = 8; // STATE + w: per-worker state
export const W_IDLE = 0, W_READY = 1, W_DEAD = 2, W_ERROR = 3;
const ERR_BYTES = 512;

export type WasmFn = (...args: number[]) => number | void;

/** Whether this thread may block in Atomics.wait (false once it threw: a browser page's main thread). */
let mayBlock = true;

/** A kernel threw or trapped inside a worker. */
export class WasmWorkerError extends Error {
  override name = 'WasmWorkerError';
  constructor(readonly worker: number, readonly fn: string, readonly detail: string) {
    super(`wasm worker ${worker} failed in ${fn}: ${detail}`);
  }
}
/** A worker thread exited (crashed, killed or stopped); the pool cannot run ops any more. */
export class WasmWorkerDiedError extends Error {
  override name = 'WasmWorkerDiedError';
  constructor(readonly worker: number, readonly detail: string) {
    super(`wasm worker ${worker} died: ${detail}`);
  }
}
/** An op did not complete within opTimeoutMs. */
export class WasmPoolTimeoutError extends Error {
  override name = 'WasmPoolTimeoutError';
  constructor(readonly fn: string, readonly ms: number) {
    super(`wasm pool: ${fn} did not finish within ${ms} ms`);
  }
}

export interface PoolOptions {
  threads: number;
  memory: WebAssembly.Memory;
  modules: Record<string, WebAssembly.Module>;
  /** Upper bound on one op's wait; default 10 minutes. */
  opTimeoutMs?: number;
}

/** Environment override of the workers' polls before sleeping: SEEKD_POOL_SPIN=N (0: sleep at once). */
export const SPIN_ENV = 'SEEKD_POOL_SPIN';
/**
 * Default polls before a worker sleeps: 20000, about 100-300 µs. The ops of a forward come back to back
 * (microseconds of JS between two), and waking a sleeping worker costs 15-20 µs, 45-140 µs once its vCPU
 * went idle: measured on this 2-vCPU VM, the hand-off of an empty op fell from 15-20 µs to 1.3-2.3 µs,
 * and 2-thread decode of medium ran 1.05-1.31x faster (alternated A/B runs of bench forward).
 */
export function poolSpinPolls(): number {
  const env = globalThis.process?.env[SPIN_ENV];
  if (env === undefined || env === '') return 20000;
  const n = Number(env);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${SPIN_ENV} must be a non-negative integer, not '${env}'`);
  return n;
}

/** Function table shared by both sides: "module.export" names in a fixed order. */
export function functionNames(modules: Record<string, WebAssembly.Module>): string[] {
  const names: string[] = [];
  for (const m of Object.keys(modules).sort()) {
    for (const e of WebAssembly.Module.exports(modules[m]!)) if (e.kind === 'function') names.push(`${m}.${e.name}`);
  }
  return names;
}

export function instantiateAll(modules: Record<string, WebAssembly.Module>, memory: WebAssembly.Memory): Record<string, Record<string, WasmFn>> {
  const out: Record<string, Record<string, WasmFn>> = {};
  for (const [name, mod] of Object.entries(modules)) {
    const inst = new WebAssembly.Instance(mod, {
      env: {
        memory,
        abort: (_m: number, _f: number, line: number, col: number) => { throw new Error(`wasm abort at ${name}:${line}:${col}`); },
      },
    });
    out[name] = inst.exports as unknown as Record<string, WasmFn>;
  }
  return out;
}

export class WasmPool {
  readonly threads: number;
  private readonly ctrl: Int32Array;
  private readonly args: Float64Array;
  private readonly errs: Uint8Array;
  private readonly names: string[];
  private readonly fnIndex = new Map<string, number>();
  private readonly local: Record<string, Record<string, WasmFn>>;
  private readonly opTimeoutMs: number;
  private broken: Error | null = null;
  private disposed = false;
  /** Ops that reached worker threads, in every pool of this thread (the browser page reports it). */
  static parallelRuns = 0;
  /** Test hook: worker index that exits inside the next op that reaches the workers, in any pool (0 = none). */
  private static dieInNextRun = 0;

  private constructor(opts: PoolOptions, private readonly workers: Worker[], ctrl: SharedArrayBuffer, args: SharedArrayBuffer, errs: SharedArrayBuffer) {
    this.threads = workers.length + 1;
    this.ctrl = new Int32Array(ctrl);
    this.args = new Float64Array(args);
    this.errs = new Uint8Array(errs);
    this.names = functionNames(opts.modules);
    this.names.forEach((n, i) => this.fnIndex.set(n, i));
    this.local = instantiateAll(opts.modules, opts.memory);
    this.opTimeoutMs = opts.opTimeoutMs ?? 600_000;
  }

  static async create(opts: PoolOptions): Promise<WasmPool> {
    const n = Math.max(1, Math.floor(opts.threads));
    // Without workers nothing is shared: a browser page that is not cross-origin isolated has no
    // SharedArrayBuffer (its shared wasm memory still works), and one thread needs none.
    const hasSab = typeof SharedArrayBuffer !== 'undefined';
    if (n > 1 && !hasSab) throw new Error('wasm pool: threads need SharedArrayBuffer (in a browser: a cross-origin isolated page)');
    const Sab = hasSab ? SharedArrayBuffer : ArrayBuffer as unknown as SharedArrayBufferConstructor;
    const ctrl = new Sab(4 * (STATE + n));
    const args = new Sab(8 * MAX_ARGS * n);
    const errs = new Sab(ERR_BYTES * n);
    const workers: Worker[] = [];
    const spin = poolSpinPolls();
    try {
      await Promise.all(Array.from({ length: n - 1 }, (_, i) => new Promise<void>((resolve, reject) => {
        const w = spawnWorker(new URL('./pool-worker.ts', import.meta.url), {
          index: i + 1, ctrl, args, errs, memory: opts.memory, modules: opts.modules, spin,
        });
        workers.push(w);
        w.once('message', (m: unknown) => (m === 'ready' ? resolve() : reject(new Error(String(m)))));
        w.once('error', reject);
        w.once('exit', (code) => reject(new WasmWorkerDiedError(i + 1, `exited with code ${code} during start`)));
      })));
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    const pool = new WasmPool(opts, workers, ctrl, args, errs);
    workers.forEach((w, i) => {
      w.removeAllListeners('exit');
      w.removeAllListeners('error');
      w.on('error', () => { /* reported through the shared state; see the worker's exit hook */ });
      // A worker that ended without its exit hook (terminated from outside) breaks the pool too; the
      // shared state word covers deaths during an op (this event only runs between ops).
      w.on('exit', (code) => {
        if (!pool.disposed && !pool.broken) pool.broken = new WasmWorkerDiedError(i + 1, `exited with code ${code}`);
      });
      // Workers only ever talk through shared memory; a forgotten dispose() must not keep the process alive.
      w.unref();
    });
    return pool;
  }

  /** The calling thread's instance of a module (for single-threaded calls). */
  exports(module: string): Record<string, WasmFn> {
    const e = this.local[module];
    if (!e) throw new RangeError(`wasm pool: no module ${module}`);
    return e;
  }

  /**
   * Runs `module.fn` on every participant t in [0, threads) with argsFor(t) (null: participant t has
   * nothing to do). Participant 0 is the calling thread. Returns when all are done.
   */
  run(module: string, fn: string, argsFor: (t: number) => number[] | null): void {
    if (this.disposed) throw new Error('wasm pool: disposed');
    if (this.broken) throw this.broken;
    this.checkDead();
    const name = `${module}.${fn}`;
    const id = this.fnIndex.get(name);
    if (id === undefined) throw new RangeError(`wasm pool: no function ${name}`);
    const own = argsFor(0);
    const nw = this.workers.length;
    let any = false;
    for (let t = 1; t <= nw; t++) {
      const a = argsFor(t);
      const base = (t) * MAX_ARGS;
      if (t === WasmPool.dieInNextRun) { WasmPool.dieInNextRun = 0; this.args[base] = -2; any = true; continue; }
      if (a === null) { this.args[base] = -1; continue; }
      if (a.length > MAX_ARGS - 1) throw new RangeError(`wasm pool: ${a.length} arguments (max ${MAX_ARGS - 1})`);
      this.args[base] = a.length;
      for (let i = 0; i < a.length; i++) this.args[base + 1 + i] = a[i]!;
      any = true;
    }
    if (!any) {
      if (own) (this.local[module]![fn]!)(...own);
      return;
    }
    WasmPool.parallelRuns++;
    Atomics.store(this.ctrl, FN, id);
    Atomics.store(this.ctrl, DONE, 0);
    Atomics.add(this.ctrl, SEQ, 1);
    Atomics.notify(this.ctrl, SEQ);
    let ownError: unknown = null;
    try {
      if (own) (this.local[module]![fn]!)(...own);
    } catch (e) {
      ownError = e;
    }
    this.waitDone(name, nw);
    if (ownError) throw ownError;
    for (let t = 1; t <= nw; t++) {
      if (Atomics.load(this.ctrl, STATE + t) === W_ERROR) {
        const msg = this.errorText(t);
        Atomics.store(this.ctrl, STATE + t, W_READY);
        throw new WasmWorkerError(t, name, msg);
      }
    }
  }

  private errorText(t: number): string {
    const bytes = this.errs.slice(t * ERR_BYTES, (t + 1) * ERR_BYTES);
    const end = bytes.indexOf(0);
    return new TextDecoder().decode(bytes.subarray(0, end < 0 ? bytes.length : end));
  }

  private checkDead(): void {
    for (let t = 1; t < this.threads; t++) {
      if (Atomics.load(this.ctrl, STATE + t) === W_DEAD) {
        this.broken = new WasmWorkerDiedError(t, this.errorText(t) || 'exited');
        throw this.broken;
      }
    }
  }

  private waitDone(name: string, n: number): void {
    for (let spin = 0; spin < 20000; spin++) if (Atomics.load(this.ctrl, DONE) >= n) { this.checkDead(); return; }
    const t0 = Date.now();
    for (;;) {
      const d = Atomics.load(this.ctrl, DONE);
      if (d >= n) { this.checkDead(); return; }
      this.checkDead();
      if (Date.now() - t0 > this.opTimeoutMs) {
        this.broken = new WasmPoolTimeoutError(name, this.opTimeoutMs);
        throw this.broken;
      }
      if (mayBlock) {
        try {
          Atomics.wait(this.ctrl, DONE, d, 200);
        } catch (e) {
          // A browser page's main thread may not block: it spins on the DONE word instead.
          if (!(e instanceof TypeError)) throw e;
          mayBlock = false;
        }
      }
    }
  }

  /** Test hook: makes worker t exit as if it crashed (process.exit inside the worker); resolves once it has. */
  killWorkerForTest(t: number): Promise<void> {
    if (t < 1 || t >= this.threads) throw new RangeError(`no worker ${t}`);
    const w = this.workers[t - 1]!;
    w.ref(); // keep the event loop alive until its exit event arrives
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    this.args[t * MAX_ARGS] = -2;
    for (let u = 1; u < this.threads; u++) if (u !== t) this.args[u * MAX_ARGS] = -1;
    Atomics.store(this.ctrl, DONE, 0);
    Atomics.add(this.ctrl, SEQ, 1);
    Atomics.notify(this.ctrl, SEQ);
    return exited;
  }

  /**
   * Test hook: worker t of the next pool whose op reaches its workers exits (as if it crashed) INSIDE
   * that op instead of computing its share: the op throws WasmWorkerDiedError, as a real death
   * mid-forward would. Process-wide (a loaded model's pools are not reachable from outside); 0 disarms.
   */
  static dieInNextRunForTest(t: number): void {
    if (!Number.isInteger(t) || t < 0) throw new RangeError(`no worker ${t}`);
    WasmPool.dieInNextRun = t;
  }

  /** Stops the workers (they finish their current op first). */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.ctrl, STOP, 1);
    Atomics.add(this.ctrl, SEQ, 1);
    Atomics.notify(this.ctrl, SEQ);
    await Promise.all(this.workers.map((w) => new Promise<void>((resolve) => {
      w.ref();
      const timer = setTimeout(() => { void w.terminate().then(() => resolve()); }, 2000);
      w.once('exit', () => { clearTimeout(timer); resolve(); });
      if (w.threadId < 0) { clearTimeout(timer); resolve(); }
    })));
  }
}
