import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExpertLoadRecorder } from './recorder.ts';
import { EplbArgumentError } from './errors.ts';
import { rebalanceExperts } from './eplb.ts';

test('token window keeps exactly the last N tokens', () => {
  const r = new ExpertLoadRecorder({ numLayers: 2, numExperts: 4, topK: 2, window: 3 });
  r.onRouting(1, new Int32Array([0, 1, 0, 2]), new Float32Array(4)); // tokens (0,1) (0,2)
  assert.deepEqual(r.snapshot(), [[0, 0, 0, 0], [2, 1, 1, 0]]);
  r.record(1, new Int32Array([3, 2, 3, 1])); // 4 tokens seen, window 3: first token (0,1) drops
  assert.deepEqual(r.snapshot()[1], [1, 1, 2, 2]);
  r.record(1, new Int32Array([0, 1, 0, 1, 0, 1, 2, 3])); // longer than the window: only its last 3 tokens stay
  assert.deepEqual(r.snapshot()[1], [2, 2, 1, 1]);
  assert.deepEqual(r.recordedLayers(), [1]);
});

test('step window keeps the last N forward passes', () => {
  const r = new ExpertLoadRecorder({ numLayers: 1, numExperts: 3, topK: 1, window: 2, unit: 'steps' });
  r.record(0, new Int32Array([0, 0, 0]));
  r.record(0, new Int32Array([1]));
  assert.deepEqual(r.snapshot(), [[3, 1, 0]]);
  r.record(0, new Int32Array([2, 2]));
  assert.deepEqual(r.snapshot(), [[0, 1, 2]]);
  assert.equal(r.toJSON().unit, 'steps');
});

test('bad routing input is refused', () => {
  const r = new ExpertLoadRecorder({ numLayers: 1, numExperts: 3, topK: 2, window: 4 });
  assert.throws(() => r.record(1, new Int32Array([0, 1])), EplbArgumentError);
  assert.throws(() => r.record(0, new Int32Array([0, 3])), EplbArgumentError);
  assert.throws(() => r.record(0, new Int32Array([0])), EplbArgumentError);
  assert.throws(() => new ExpertLoadRecorder({ numLayers: 1, numExperts: 3, topK: 2, window: 0 }), EplbArgumentError);
});

test('writeFile output feeds rebalanceExperts', () => {
  const r = new ExpertLoadRecorder({ numLayers: 3, numExperts: 4, topK: 2, window: 100 });
  r.record(1, new Int32Array([0, 1, 0, 2, 0, 3]));
  r.record(2, new Int32Array([3, 2, 3, 1]));
  const dir = mkdtempSync(join(tmpdir(), 'seekd-rec-'));
  r.writeFile(join(dir, 'load.json'), { onlyRecorded: true });
  const rows = JSON.parse(readFileSync(join(dir, 'load.json'), 'utf8')) as number[][];
  assert.deepEqual(rows, [[3, 1, 1, 1], [0, 1, 1, 2]]);
  const plan = rebalanceExperts(rows, 6, 1, 1, 2);
  assert.equal(plan.logcnt[0]![0], 3); // the hot expert gets the two redundant slots (3 > 1/1 and 3/2 > 1)
});
