// Entry of kernels.wasm: the exports the JS side calls (src/kernels/wasm/*.ts). Imported shared memory,
// no allocator inside wasm (JS allocates, see ../heap.ts), no static data beyond __heap_base.
export { gemvF32, gemvBf16, gemvFp8, prepFp8Gemv, gemvFp8Fp8, decodeFp8, gemm, gemmChunks, gemvChunks, panelBytes } from './gemm';
export { rmsNorm, rope, softmax, siluMul, topk, gatherRows, scatterAddRows, copyStrided, copyBytes, readBytes } from './ops';
export { gemmGrouped, gemmGroupedParts } from './grouped';

/** First byte past the module's static data; the JS heap starts above it. */
export function heapBase(): usize {
  return __heap_base;
}
