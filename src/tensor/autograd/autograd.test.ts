import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, backward, noGrad, type FloatArray } from './tensor.ts';
import { linear, gelu, silu, rmsNorm, mseLoss, crossEntropy, add, mul, erf } from './ops.ts';
import { WeightGradStore } from './weight-grad-store.ts';
import { mulberry32 } from '../random.ts';

/** Uniform in [-1, 1). */
function rng(seed: number): () => number {
  const u = mulberry32(seed);
  return () => u() * 2 - 1;
}
const r = rng(7);
const rand = (shape: number[], grad = true) => new Tensor(Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 1.5), shape, grad);

/**
 * Checks d(sum(f(inputs) ⊙ probe))/d(input) from backward() against central finite differences,
 * on every element of every input that requires grad. Tolerance: |a − n| ≤ 1e-7 + 1e-6·|n| in float64.
 */
function gradcheck(name: string, inputs: Tensor[], f: () => Tensor): void {
  const out = f();
  const probe = Float64Array.from({ length: out.size }, () => r());
  const scalar = () => noGrad(() => { const o = f().data; let s = 0; for (let i = 0; i < o.length; i++) s += o[i]! * probe[i]!; return s; });
  for (const t of inputs) t.grad = null;
  backward([out], [probe]);
  const h = 1e-6;
  for (const [k, t] of inputs.entries()) {
    if (!t.requiresGrad) continue;
    assert.ok(t.grad, `${name}: input ${k} got no grad`);
    for (let i = 0; i < t.size; i++) {
      const v = t.data[i]!;
      t.data[i] = v + h;
      const up = scalar();
      t.data[i] = v - h;
      const dn = scalar();
      t.data[i] = v;
      const num = (up - dn) / (2 * h);
      const ana = t.grad[i]!;
      assert.ok(Math.abs(ana - num) <= 1e-7 + 1e-6 * Math.abs(num), `${name}: input ${k}[${i}] analytic ${ana} vs numeric ${num}`);
    }
  }
}

test('erf matches known values', () => {
  const known: Array<[number, number]> = [[0, 0], [0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527], [3, 0.9999779095030014], [-1.5, -0.9661051464753108], [5, 0.9999999999984626]];
  for (const [x, y] of known) assert.ok(Math.abs(erf(x) - y) < 2e-16 * Math.max(1, Math.abs(y)) * 4, `erf(${x}) = ${erf(x)}`);
});

test('backward of each op matches finite differences (float64)', () => {
  const x = rand([3, 5]);
  const w = rand([4, 5]);
  const b = rand([4]);
  gradcheck('linear', [x, w, b], () => linear(x, w, b));
  gradcheck('linear (no bias)', [x, w], () => linear(x, w));
  gradcheck('gelu erf', [x], () => gelu(x));
  gradcheck('gelu tanh', [x], () => gelu(x, 'tanh'));
  gradcheck('silu', [x], () => silu(x));
  const nw = rand([5]);
  gradcheck('rmsNorm', [x, nw], () => rmsNorm(x, nw, 1e-6));
  const y = rand([3, 5]);
  gradcheck('add', [x, y], () => add(x, y));
  gradcheck('mul', [x, y], () => mul(x, y));
  const target = rand([3, 5], false);
  gradcheck('mseLoss', [x], () => mseLoss(x, target));
  gradcheck('crossEntropy', [x], () => crossEntropy(x, [4, 0, 2]));
  // A composite: a SwiGLU MLP block with a residual and RMSNorm, then cross-entropy.
  const w1 = rand([6, 5]);
  const w3 = rand([6, 5]);
  const w2 = rand([5, 6]);
  gradcheck('swiglu block', [x, w1, w3, w2, nw], () => {
    const h = rmsNorm(x, nw);
    return crossEntropy(add(x, linear(mul(silu(linear(h, w1)), linear(h, w3)), w2)), [1, 2, 3]);
  });
});

test('Float32Array tensors stay float32 and agree with float64', () => {
  const x64 = rand([2, 8]);
  const w64 = rand([3, 8]);
  const x32 = new Tensor(Float32Array.from(x64.data), x64.shape, true);
  const w32 = new Tensor(Float32Array.from(w64.data), w64.shape, true);
  const t = rand([2, 3], false);
  const run = (x: Tensor, w: Tensor) => {
    const loss = mseLoss(gelu(linear(x, w)), new Tensor(new (x.ctor)(t.data), t.shape));
    backward([loss], [null]);
    return loss;
  };
  const l64 = run(x64, w64);
  const l32 = run(x32, w32);
  assert.ok(l32.data instanceof Float32Array && w32.grad instanceof Float32Array && x32.grad instanceof Float32Array);
  assert.ok(Math.abs(l32.item() - l64.item()) < 1e-5);
  for (let i = 0; i < w64.size; i++) assert.ok(Math.abs(w32.grad![i]! - w64.grad![i]!) < 1e-5);
});

test('WeightGradStore defers dW and gives the same gradients', () => {
  const x = rand([4, 6]);
  const w1 = rand([8, 6]);
  const w2 = rand([6, 8]);
  const target = rand([4, 6], false);
  const f = (store: WeightGradStore | null) => mseLoss(linear(gelu(linear(x, w1, null, { store })), w2, null, { store }), target);
  backward([f(null)], [null]);
  const ref = [w1.grad!.slice(), w2.grad!.slice(), x.grad!.slice()];
  for (const t of [x, w1, w2]) t.grad = null;
  const store = new WeightGradStore();
  store.enabled = true;
  backward([f(store)], [null]);
  store.enabled = false;
  store.flush();
  assert.equal(w1.grad, null); // deferred: nothing yet
  assert.deepEqual(x.grad, ref[2]); // input grads are not deferred
  assert.equal(store.size, 1);
  store.pop();
  assert.deepEqual(w1.grad, ref[0]);
  assert.deepEqual(w2.grad, ref[1]);
  assert.throws(() => store.pop());
});

test('noGrad records nothing; backward refuses graphless outputs', () => {
  const x = rand([2, 3]);
  const y = noGrad(() => gelu(x));
  assert.equal(y.gradFn, null);
  assert.throws(() => backward([y], [null]), /does not require grad/);
  const z = gelu(x);
  assert.throws(() => backward([z], [null]), /one-element/);
  const check = (a: FloatArray) => a.length;
  assert.equal(check(z.data), 6);
});
