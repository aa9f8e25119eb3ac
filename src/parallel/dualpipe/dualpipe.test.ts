// DualPipe and DualPipeV against a single-process micro-batch loop, as DeepSeek's example_dualpipe.py:
// 20 chunks, micro-batch 3, hidden 512, Linear-GELU-Linear stages, MSE loss, float64.
// Sequence length is scaled down from 256 to SEQ = 1 so the whole file stays within a few tens of
// seconds on 2 cores (the work per chunk is then 3 tokens × 2 GEMMs of 512×2048 per stage).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/autograd/index.ts';
import { DualPipeRuntime, type StageWeights, type DualPipeConfig } from './runtime.ts';
import { referenceStep } from './reference.ts';
import { MlpStage, mseCriterion } from './stage.ts';
import { PipelineConfigError } from './errors.ts';
import type { PipeKind } from './schedule.ts';
import { mulberry32 } from '../../tensor/random.ts';

const CHUNKS = 20;
const MB = 3;
const SEQ = 1;
const HIDDEN = 512;

const rng = mulberry32;
/** Standard normals (Box-Muller). */
function randn(r: () => number, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - r();
    const v = r();
    const m = Math.sqrt(-2 * Math.log(u));
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}
/** nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in)). */
function uniformInit(r: () => number, n: number, fanIn: number): Float64Array {
  const b = 1 / Math.sqrt(fanIn);
  return Float64Array.from({ length: n }, () => (2 * r() - 1) * b);
}

/** The example's cal_diff: 1 − 2·Σxy / Σ(x² + y²). */
function cosDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let xy = 0;
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i]! * y[i]!;
    s += x[i]! * x[i]! + y[i]! * y[i]!;
  }
  return 1 - (2 * xy) / s;
}

function setup(pp: number, seed: number) {
  const r = rng(seed);
  const ffn = 4 * HIDDEN;
  const weights: StageWeights[] = Array.from({ length: pp }, () => ({ w1: uniformInit(r, ffn * HIDDEN, HIDDEN), w2: uniformInit(r, ffn * HIDDEN, ffn) }));
  const n = CHUNKS * MB * SEQ * HIDDEN;
  const x = randn(r, n);
  const labels = randn(r, n);
  const stages = weights.map((w) => new MlpStage(new Tensor(w.w1, [ffn, HIDDEN], true), new Tensor(w.w2, [HIDDEN, ffn], true)));
  const ref = referenceStep(stages, x, labels, CHUNKS, [MB, SEQ, HIDDEN], mseCriterion);
  const refGrads = stages.map((s) => s.parameters().map((p) => p.grad!));
  const refNoGrad = referenceStep(stages, x, labels, CHUNKS, [MB, SEQ, HIDDEN], mseCriterion, { forwardOnly: true });
  return { weights, x, labels, ref, refGrads, refNoGrad };
}

async function check(kind: PipeKind, pp: number, s: ReturnType<typeof setup>): Promise<number> {
  const cfg: DualPipeConfig = { kind, numStages: pp, numChunks: CHUNKS, microBatch: MB, seqLen: SEQ, hidden: HIDDEN };
  const rt = await DualPipeRuntime.create(cfg, s.weights);
  try {
    const train = await rt.step(s.x, s.labels);
    // Losses: bit-identical to the single-process loop.
    train.losses.forEach((l, i) => assert.ok(Object.is(l, s.ref.losses[i]), `${kind} PP${pp} loss ${i}: ${l} vs ${s.ref.losses[i]}`));
    assert.equal(train.outputs, null);
    // Gradients (mirror copies summed): cos-diff < 1e-13.
    const grads = await rt.gradients();
    let worst = 0;
    grads.forEach((g, stage) => {
      for (const [k, name] of [[0, 'w1'], [1, 'w2']] as const) {
        const d = cosDiff(g[name], s.refGrads[stage]![k]!);
        assert.ok(d < 1e-13, `${kind} PP${pp} stage ${stage} ${name}: cos diff ${d}`);
        worst = Math.max(worst, d);
      }
    });
    await rt.zeroGrad();
    // Inference step: losses and outputs bit-identical.
    const inf = await rt.step(s.x, s.labels, { forwardOnly: true, returnOutputs: true });
    inf.losses.forEach((l, i) => assert.ok(Object.is(l, s.refNoGrad.losses[i]), `${kind} PP${pp} no-grad loss ${i}`));
    inf.outputs!.forEach((o, i) => assert.deepEqual(o, s.refNoGrad.outputs[i], `${kind} PP${pp} no-grad output ${i}`));
    return worst;
  } finally {
    await rt.close();
  }
}

for (const pp of [2, 4, 8]) {
  test(`DualPipe (PP ${pp} ranks) and DualPipeV (PP ${pp} stages on ${pp / 2} ranks) match the single-process loop`, async (t) => {
    const s = setup(pp, 233 + pp);
    const d1 = await check('dualpipe', pp, s);
    const d2 = await check('dualpipev', pp, s);
    t.diagnostic(`largest gradient cos-diff: DualPipe ${d1.toExponential(2)}, DualPipeV ${d2.toExponential(2)}`);
  });
}

test('configurations the reference refuses are refused', async () => {
  const w = (pp: number): StageWeights[] => Array.from({ length: pp }, () => ({ w1: new Float64Array(8 * 2), w2: new Float64Array(8 * 2) }));
  const base = { microBatch: 1, seqLen: 1, hidden: 2, ffn: 8 };
  const bad: Array<[DualPipeConfig, string]> = [
    [{ ...base, kind: 'dualpipe', numStages: 3, numChunks: 20 }, 'numStages'],
    [{ ...base, kind: 'dualpipev', numStages: 5, numChunks: 20 }, 'numStages'],
    [{ ...base, kind: 'dualpipe', numStages: 4, numChunks: 6 }, 'numChunks'],
    [{ ...base, kind: 'dualpipe', numStages: 4, numChunks: 9 }, 'numChunks'],
    [{ ...base, kind: 'dualpipev', numStages: 8, numChunks: 7 }, 'numChunks'],
  ];
  for (const [cfg, field] of bad) {
    await assert.rejects(DualPipeRuntime.create(cfg, w(cfg.numStages)), (e: unknown) => e instanceof PipelineConfigError && e.field === field, JSON.stringify(cfg));
  }
});
