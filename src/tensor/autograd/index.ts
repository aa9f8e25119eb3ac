// Public surface of the autograd: tensors, backward(), ops, deferred weight gradients.
export * from './tensor.ts';
export * from './ops.ts';
export { WeightGradStore } from './weight-grad-store.ts';
