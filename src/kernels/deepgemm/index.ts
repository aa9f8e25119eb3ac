// DeepGEMM port: FP8 GEMMs with fine-grained scaling (types, quantizers, backends).
// Reference: https://github.com/deepseek-ai/DeepGEMM
export * from './types.ts';
export * from './quant.ts';
export { refDeepGemm } from './ref.ts';
export { WasmDeepGemm } from './wasm.ts';
