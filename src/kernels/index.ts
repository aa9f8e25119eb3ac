// Imports every backend so that `loadBackend(name)` finds it. Add one line per backend.
import './ref/index.ts';
import './wasm/index.ts';
import './webgpu/registry.ts';

export { loadBackend, backendNames, type Kernels, type WeightMatrix } from './api.ts';
