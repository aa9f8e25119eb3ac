// Pipeline-parallel training equals PP 1 bit for bit: the same tiny DeepSeek-V3 model (MLA, MoE with
// the router bias, one MTP module, balance loss) trained 3 steps of 4 micro-batches on this thread and
// on worker-thread pipelines (DualPipe PP 2, DualPipeV PP 2 = 4 stages, 1F1B PP 3) gives the same losses,
// gradient norms and final parameters, to the bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBackend } from '../../kernels/index.ts';
import { parseConfig } from '../../model/config.ts';
import { mulberry32 } from '../../tensor/random.ts';
import { Gemm } from '../gemm.ts';
import { AdamW } from '../optim.ts';
import { initTrainParams, namedParams, trainableTensors } from '../params.ts';
import { trainStepChunks, WindowSampler } from '../trainer.ts';
import { checkPipeline, LocalEngine, PipelineEngine, PipelineError, type ScheduleKind } from './runtime.ts';
import { planStages } from './stage.ts';
import { PipelineRankError } from '../../parallel/dualpipe/errors.ts';
import { TINY_TRAIN_CONFIG } from '../tiny-config.ts';

const TINY = TINY_TRAIN_CONFIG;

test('stage plans cover the layers once, in order, the head on the last stage', () => {
  const c = parseConfig(TINY);
  for (const S of [1, 2, 3, 4, 6]) {
    const p = planStages(c, S);
    assert.equal(p.length, S);
    assert.equal(p[0]!.from, 0);
    assert.equal(p[S - 1]!.to, 3);
    p.forEach((s, i) => { if (i > 0) assert.equal(s.from, p[i - 1]!.to); assert.ok(s.to >= s.from); });
    assert.ok(p[0]!.first && p[S - 1]!.last);
  }
  assert.deepEqual(planStages(c, 2).map((s) => [s.from, s.to]), [[0, 2], [2, 3]]);
});

test('PP 2 (DualPipe, DualPipeV) and PP 3 (1F1B) train to the bit like PP 1', async () => {
  const c = parseConfig(TINY);
  const r = mulberry32(3);
  // A 30-token phrase repeated: learnable in a few steps.
  const phrase = Array.from({ length: 30 }, () => Math.floor(r() * c.vocab_size));
  const tokens = Int32Array.from({ length: 1200 }, (_, i) => phrase[i % 30]!);
  const shape = { chunks: 4, microBatch: 2, seqLen: 8 };
  const sampler = new WindowSampler(tokens, shape.seqLen, 1);
  const o = { schedule: { lr: 1e-2, warmupSteps: 1, totalSteps: 3 }, clip: 1, biasSpeed: 1e-3, mtpLambda: 0.3 };
  const k = await loadBackend('wasm', { threads: 1 });
  try {
    const run = async (kind: ScheduleKind | null, pp: number) => {
      const params = initTrainParams(c, { seed: 9 });
      const opt = new AdamW(trainableTensors(c, params));
      const eng = kind ? await PipelineEngine.create(c, TINY, params, { kind, pp, ...shape }) : new LocalEngine(c, params, new Gemm(k), shape.chunks);
      const steps = [];
      try {
        for (let s = 1; s <= 3; s++) {
          const st = await trainStepChunks(eng, c, params, opt, sampler.batch(s, shape), o);
          steps.push([st.loss, st.mainLoss, st.gradNorm, st.balanceLoss, ...st.mtpLosses]);
        }
      } finally {
        await eng.close();
      }
      return { steps, params: namedParams(c, params).map((n) => Float32Array.from(n.tensor.data)) };
    };
    const ref = await run(null, 1);
    assert.ok(ref.steps[2]![1]! < ref.steps[0]![1]!, `the main loss goes down: ${ref.steps.map((s) => s[1]).join(', ')}`);
    for (const [kind, pp] of [['dualpipe', 2], ['dualpipev', 2], ['1f1b', 3]] as const) {
      const got = await run(kind, pp);
      assert.deepEqual(got.steps, ref.steps, `${kind} PP ${pp}: losses`);
      got.params.forEach((p, i) => assert.deepEqual(p, ref.params[i], `${kind} PP ${pp}: parameter ${i}`));
    }
  } finally {
    await k.dispose();
  }
});

test('a rank that fails rejects the step with the rank and the cause; the engine still closes', async () => {
  const c = parseConfig(TINY);
  const eng = await PipelineEngine.create(c, TINY, initTrainParams(c, { seed: 1 }), { kind: '1f1b', pp: 2, chunks: 2, microBatch: 1, seqLen: 4 });
  const bad = [[Int32Array.of(1, 2, 3, 4, 99)], [Int32Array.of(1, 2, 3, 4, 5)]];
  await assert.rejects(eng.run(bad), (e: unknown) => e instanceof PipelineRankError && e.rank === 0 && /token id 99/.test(e.message));
  await eng.close();
});

test('schedules refuse what they cannot run', () => {
  assert.throws(() => checkPipeline('dualpipe', 3, 6), PipelineError);
  assert.throws(() => checkPipeline('dualpipev', 2, 3), PipelineError);
  assert.throws(() => checkPipeline('1f1b', 1, 4), PipelineError);
  checkPipeline('1f1b', 3, 1);
  checkPipeline('dualpipev', 2, 4);
});
