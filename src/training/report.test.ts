// Model-FLOPs accounting against the products a forward really runs, the bubble measured from
// compute spans, the loss-curve SVG and the progress line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Kernels } from '../kernels/api.ts';
import { loadBackend } from '../kernels/index.ts';
import { parseConfig } from '../model/config.ts';
import { noGrad } from '../tensor/autograd/index.ts';
import type { TraceEvent } from '../parallel/trace/chrome-trace.ts';
import { forwardFlops, gemmPeak, trainFlopsPerWindow } from './flops.ts';
import { Gemm } from './gemm.ts';
import { TrainModel } from './model.ts';
import { initTrainParams } from './params.ts';
import { TINY_TRAIN_CONFIG as TINY } from './tiny-config.ts';
import { formatDuration, lossCurveSvg, measureBubble, progressLine } from './report.ts';

test('model FLOPs: the projections of a forward (MLA, dense, MoE top-k + shared, lm_head, MTP) = the products the kernels ran', async () => {
  const k = await loadBackend('wasm', { threads: 1 });
  try {
    const c = parseConfig(TINY);
    const n = 7; // no model width is 7 or 6 (the MTP module's length): attention's products are the ones with n in them
    let proj = 0, attn = 0;
    const count = (M: number, N: number, K: number) => { if ([n, n - 1].includes(N) || [n, n - 1].includes(K)) attn += 2 * M * N * K; else proj += 2 * M * N * K; };
    const spy: Kernels = {
      ...k,
      matmul: (x, m, w, out) => { count(m, w.rows, w.cols); return k.matmul(x, m, w, out); },
      groupedMatmul: (x, m, w, seg, out) => { for (let g = 0; g < w.groups; g++) count(seg.count[g]!, w.rows, w.cols); return k.groupedMatmul(x, m, w, seg, out); },
    };
    const model = new TrainModel(c, initTrainParams(c, { seed: 3 }), new Gemm(spy));
    noGrad(() => model.forward([Int32Array.from({ length: n + 1 }, (_, i) => (i * 7) % c.vocab_size)]));
    const f = forwardFlops(c, n);
    assert.equal(proj, f.matmul);
    // Attention runs the full n × n scores per head; model FLOPs count the causal half (Σ (i + 1) keys).
    const full = 2 * c.num_attention_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim) * (c.num_hidden_layers * n * n + (n - 1) * (n - 1));
    assert.equal(attn, full);
    assert.equal(f.attention, 2 * c.num_attention_heads * 24 * (3 * (n * (n + 1)) / 2 + ((n - 1) * n) / 2));
    assert.equal(trainFlopsPerWindow(c, n), 3 * (f.matmul + f.attention));
    assert.ok(gemmPeak(k, 1) > 0.1);
  } finally {
    await k.dispose();
  }
});

test('bubble: makespan − each rank\'s compute, mean costs, the closed form at those costs', () => {
  const ev = (pid: number, name: string, t0: number, t1: number): TraceEvent => ({ name, cat: 'compute', ph: 'X', ts: t0 * 1000, dur: (t1 - t0) * 1000, pid, tid: 1 });
  // 1F1B on 2 ranks, 2 chunks: F 10 ms, B 20 ms.
  const events = [
    ev(0, 'F0', 0, 10), ev(0, 'F0', 10, 20), ev(1, 'F0', 10, 20), ev(1, 'B0', 20, 40), ev(1, 'F0', 40, 50), ev(0, 'B0', 40, 60), ev(1, 'B0', 50, 70), ev(0, 'B0', 70, 90),
    { name: 'p2p wait', cat: 'comm', ph: 'X', ts: 0, dur: 5000, pid: 0, tid: 2 },
  ];
  const b = measureBubble(events, '1f1b', 2, 2)!;
  assert.equal(b.makespanMs, 90);
  assert.deepEqual(b.bubblesMs, [90 - 60, 90 - 60]);
  assert.deepEqual(b.costs, { F: 10, B: 20, W: 0, FB: 0 });
  assert.equal(b.closedFormMs, (2 - 1) * (10 + 20));
  // DualPipeV: 2 ranks = 4 stages; (PP/2 − 1)(F&B + B − 3W) with F&B from F + B when no overlapped block ran.
  const v = measureBubble([ev(0, 'F0', 0, 10), ev(0, 'B0 (zb)', 10, 25), ev(0, 'W', 25, 30), ev(1, 'F1', 0, 10), ev(1, 'B1', 10, 30)], 'dualpipev', 2, 4)!;
  assert.deepEqual(v.costs, { F: 10, B: 20, W: 5, FB: 0 });
  assert.equal(v.closedFormMs, (4 / 2 - 1) * (10 + 20 + 20 - 15));
  assert.equal(measureBubble([], 'dualpipe', 2, 2), null);
});

test('loss-curve SVG and progress line', () => {
  const svg = lossCurveSvg([{ name: 'train', color: '#123456', points: [[1, 7.5], [2, 7], [3, 6.25]] }, { name: 'held <out>', color: '#654321', points: [[3, 6.5]] }], 'run');
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<polyline [^>]*stroke="#123456"[^>]*points="([\d.]+,[\d.]+ ){2}[\d.]+,[\d.]+"/);
  assert.match(svg, /<circle [^>]*fill="#654321"/);
  assert.ok(svg.includes('held &lt;out>') && svg.trimEnd().endsWith('</svg>'));
  assert.equal(progressLine({ step: 5, steps: 10, loss: 3.14159, tokensPerSec: 1234.4, etaSec: 125, evalLoss: 3.5 }, 10), '[====>     ]  5/10 loss 3.1416 val 3.5000 1234 tok/s ETA 2m05s');
  assert.equal(formatDuration(3 * 3600 + 61), '3h01m');
  assert.equal(formatDuration(NaN), '--');
});
