// Browser stand-in for the `process` global inside the page's pool worker: on('exit' | 'uncaughtException')
// handlers (the worker reports its death through the shared state), exit() runs the exit handlers and
// closes the worker.
declare const self: { close(): void; addEventListener(t: 'error', f: (e: { error: unknown; preventDefault(): void }) => void): void };

const handlers: Record<string, ((v: unknown) => void)[]> = {};

export const process = {
  on(ev: string, f: (v: unknown) => void): void {
    (handlers[ev] ??= []).push(f);
  },
  exit(code = 0): never {
    for (const f of handlers.exit ?? []) f(code);
    self.close();
    throw new Error(`worker exited with code ${code}`);
  },
};

self.addEventListener('error', (e) => {
  const hs = handlers.uncaughtException ?? [];
  if (hs.length === 0) return;
  e.preventDefault();
  for (const f of hs) f(e.error);
});
