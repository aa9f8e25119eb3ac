// `seekd generate --ep R` end to end: same tokens and logits within 2e-5 as --ep 1, with EPLB placement
// from --expert-loads and two micro-batches, the wasm backend against the reference; bad EP options are usage errors (exit 2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REF_DIR, maxAbsDiff } from '../../../../test/helpers.ts';

const BIN = fileURLToPath(new URL('../../../../bin/seekd.mjs', import.meta.url));
const MODEL = join(REF_DIR, 'tiny-v3-bf16');

function seekd(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('seekd generate --ep 4 --micro-batches 2 --expert-loads on the wasm backend (its experts on the wasm DeepGEMM) matches --ep 1 on ref', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-ep-'));
  try {
    const loads = join(dir, 'loads.json');
    writeFileSync(loads, JSON.stringify([[30, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 20], [1, 1, 40, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]));
    const args = ['generate', '--model', MODEL, '--ids', '3,1,4,1,5,9,2,6', '--max-tokens', '4', '--json'];
    const one = seekd([...args, '--ep', '1']);
    assert.equal(one.status, 0, one.stderr);
    const four = seekd([...args, '--ep', '4', '--micro-batches', '2', '--expert-loads', loads, '--backend', 'wasm']);
    assert.equal(four.status, 0, four.stderr);
    const a = JSON.parse(one.stdout) as { ids: number[]; logits: number[][] };
    const b = JSON.parse(four.stdout) as { ids: number[]; logits: number[][] };
    assert.deepEqual(b.ids, a.ids);
    a.logits.forEach((l, j) => assert.ok(maxAbsDiff(l, b.logits[j]!) <= 2e-5, `step ${j}`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad --ep options are usage errors', () => {
  const r = seekd(['generate', '--model', MODEL, '--ids', '1', '--ep', '3']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /do not split evenly over 3 ranks/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  const m = seekd(['generate', '--model', MODEL, '--ids', '1', '--ep', '2', '--micro-batches', '3']);
  assert.equal(m.status, 2);
});
