// Registers the `wasm` backend (WebAssembly SIMD + threads, weights across several memories).
// Importing this module is enough.
import { registerBackend } from '../api.ts';
import { WasmOps } from './memories.ts';

registerBackend({
  name: 'wasm',
  async create(opts) {
    return WasmOps.create(opts.threads);
  },
});

export { WasmOps };
export { WasmMemoryOps } from './backend.ts';
export { WasmRuntime } from './runtime.ts';
