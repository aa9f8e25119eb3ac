// Browser stand-in for node:worker_threads inside the page's pool worker (pool-worker.js, a module Web
// Worker started by shims/worker.ts): workerData is the first message (top-level await, so the worker's
// module body runs with it as under Node), parentPort posts to the page.
declare const self: { onmessage: ((e: { data: unknown }) => void) | null; postMessage(m: unknown): void; close(): void };

export const workerData: { data: unknown } = {
  data: await new Promise<unknown>((resolve) => { self.onmessage = (e) => { self.onmessage = null; resolve(e.data); }; }),
};

export const parentPort = {
  postMessage(m: unknown): void { self.postMessage(m); },
  close(): void { self.close(); },
};
