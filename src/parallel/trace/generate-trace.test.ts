// `seekd generate --trace` on the tiny DeepSeek-V3 checkpoint: the file is a valid Chrome trace with a
// span per layer for attention and for the MoE (or dense MLP) of every forward pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateChromeTrace, type TraceSummary } from './validate.ts';
import type { ChromeTrace } from './chrome-trace.ts';
import { REF_DIR, REPO_ROOT } from '../../../test/helpers.ts';

const ROOT = REPO_ROOT;
const MODEL = join(REF_DIR, 'tiny-v3-bf16');

test('seekd generate --trace writes a valid Chrome trace with per-layer attention and MoE spans', () => {
  const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')) as { num_hidden_layers: number; first_k_dense_replace: number; moe_layer_freq: number };
  const out = join(mkdtempSync(join(tmpdir(), 'seekd-trace-')), 'gen.json');
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/seekd.mjs'), 'generate', '--model', MODEL, '--ids', '0,5,17,3', '--max-tokens', '3', '--trace', out], { encoding: 'utf8' });
  const wallUs = (Date.now() - t0) * 1000;
  assert.equal(r.status, 0, r.stderr);
  const trace = JSON.parse(readFileSync(out, 'utf8')) as ChromeTrace;
  const s: TraceSummary = validateChromeTrace(trace);
  assert.equal(s.processes.get(0), 'seekd generate');
  assert.ok([...s.threads.values()].includes('compute'));
  const count = (name: string) => trace.traceEvents.filter((e) => e.ph === 'X' && e.name === name).length;
  // 3 generated tokens = 1 prefill + 2 decode forward passes.
  const forwards = 3;
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const moe = l >= cfg.first_k_dense_replace && l % cfg.moe_layer_freq === 0;
    assert.equal(count(`layer.${l}.attn`), forwards, `layer ${l} attention spans`);
    assert.equal(count(`layer.${l}.${moe ? 'moe' : 'mlp'}`), forwards, `layer ${l} ${moe ? 'MoE' : 'MLP'} spans`);
  }
  assert.ok(count('layer.1.moe') > 0, 'the tiny model has MoE layers');
  // µs timestamps: the whole run's span is shorter than the wall time measured around the process and
  // far longer than it would be in ms.
  const gen = trace.traceEvents.find((e) => e.name === 'generate')!;
  assert.ok(gen.dur! <= wallUs && gen.dur! > wallUs / 1000, `generate span ${gen.dur} µs vs wall ${wallUs} µs`);
  // Layer spans lie inside the generate span.
  for (const e of trace.traceEvents) {
    if (e.ph === 'X' && e.name.startsWith('layer.')) assert.ok(e.ts! >= gen.ts! && e.ts! + e.dur! <= gen.ts! + gen.dur! + 1);
  }
});
