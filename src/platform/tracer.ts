// A minimal tracing hook: code wraps a unit of work in `tracer?.span(name, cat, fn)`; recorders (e.g.
// a Chrome-trace writer in src/parallel) implement it. Without a tracer nothing is recorded.
export interface Tracer {
  span<T>(name: string, cat: string, fn: () => T, args?: Record<string, unknown>): T;
}
