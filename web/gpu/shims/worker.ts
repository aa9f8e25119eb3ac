/// <reference lib="dom" />
// Browser stand-in for src/platform/worker.ts (src/server/gpu-page.ts maps it here): spawnWorker starts
// the wasm pool's worker (src/kernels/wasm/pool-worker.ts, bundled as pool-worker.js beside app.js) as a
// module Web Worker, hands it its data in the first message, and wraps it in the part of Node's Worker
// API that WasmPool uses (once/on/removeAllListeners for 'message' | 'error' | 'exit', ref/unref,
// terminate, threadId). Only a cross-origin isolated page can share the memory with it.
type Listener = (v: unknown) => void;
type Event = 'message' | 'error' | 'exit';

export class WebPoolWorker {
  threadId = 1;
  private readonly listeners: Record<Event, { f: Listener; once: boolean }[]> = { message: [], error: [], exit: [] };
  constructor(private readonly w: Worker) {
    w.onmessage = (e: MessageEvent) => this.emit('message', e.data);
    w.onerror = (e: ErrorEvent) => { e.preventDefault(); this.emit('error', new Error(e.message)); };
  }
  private emit(ev: Event, v: unknown): void {
    const ls = this.listeners[ev];
    this.listeners[ev] = ls.filter((l) => !l.once);
    for (const l of ls) l.f(v);
  }
  on(ev: Event, f: Listener): this { this.listeners[ev].push({ f, once: false }); return this; }
  once(ev: Event, f: Listener): this { this.listeners[ev].push({ f, once: true }); return this; }
  removeAllListeners(ev: Event): this { this.listeners[ev] = []; return this; }
  ref(): void { /* Web Workers never keep a page alive */ }
  unref(): void { /* idem */ }
  terminate(): Promise<number> {
    this.w.terminate();
    this.threadId = -1;
    this.emit('exit', 1);
    return Promise.resolve(1);
  }
}

const SCRIPTS: Record<string, string> = { 'pool-worker.ts': 'pool-worker.js' };

export function spawnWorker(moduleUrl: URL | string, data?: unknown): WebPoolWorker {
  const href = typeof moduleUrl === 'string' ? moduleUrl : moduleUrl.href;
  const script = SCRIPTS[href.slice(href.lastIndexOf('/') + 1)];
  if (!script) throw new Error(`no browser worker for ${href}`);
  const w = new Worker(new URL(`./${script}`, import.meta.url), { type: 'module' });
  w.postMessage(data);
  return new WebPoolWorker(w);
}
