// Named activation buffers in backend memory, reused across forward calls (the model's and the MoE
// executor's).
import type { Kernels } from '../kernels/api.ts';

/**
 * Activation buffers by name, reused across forward calls and grown geometrically; allocated through
 * the backend (allocWeight) so they live where its kernels compute (wasm: inside its memory, read and
 * written in place). A buffer's contents are only valid until the next use of the same name.
 * Like vLLM's preallocated activations, this keeps the peak activation size of the largest batch seen
 * (bounded by the scheduler's token budget); a replaced smaller buffer is not handed back (KernelOps
 * has no free), which geometric growth bounds by the final size.
 */
export class Workspace {
  readonly #bufs = new Map<string, Float32Array>();
  constructor(private readonly k: Kernels) {}

  get(name: string, n: number): Float32Array {
    let b = this.#bufs.get(name);
    if (!b || b.length < n) {
      const cap = Math.max(n, 2 * (b?.length ?? 0), 1024);
      b = this.k.allocWeight('f32', 1, cap).data as Float32Array;
      this.#bufs.set(name, b);
    }
    return b.length === n ? b : b.subarray(0, n);
  }
}
