// Spawning worker threads whose code is TypeScript. The entry is a tiny .mjs file that registers tsx
// inside the worker and then imports the real module, so workers work the same whether the parent was
// started through `bin/seekd.mjs`, `node --import tsx` or a test runner.
import { Worker, type WorkerOptions } from 'node:worker_threads';

const ENTRY = new URL('./worker-entry.mjs', import.meta.url);

/** Starts `moduleUrl` (a .ts or .js file URL) in a worker thread; `data` arrives as `workerData.data`. */
export function spawnWorker(moduleUrl: URL | string, data?: unknown, options: Omit<WorkerOptions, 'workerData'> = {}): Worker {
  const href = typeof moduleUrl === 'string' ? moduleUrl : moduleUrl.href;
  return new Worker(ENTRY, { ...options, workerData: { module: href, data } });
}
