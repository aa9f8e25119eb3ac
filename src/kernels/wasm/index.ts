// Registers the `wasm` backend (WebAssembly SIMD + threads). Importing this module is enough.
import { registerBackend } from '../api.ts';
import { WasmOps } from './backend.ts';

registerBackend({
  name: 'wasm',
  async create(opts) {
    return WasmOps.create(opts.threads);
  },
});

export { WasmOps };
export { WasmRuntime } from './runtime.ts';
