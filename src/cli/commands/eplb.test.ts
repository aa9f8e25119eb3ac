import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = new URL('../../../bin/seekd.mjs', import.meta.url).pathname;
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, 'eplb', ...args], { encoding: 'utf8' });

test('seekd eplb --json prints the placement; bad input exits 2 with one line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-eplb-'));
  const f = join(dir, 'w.json');
  writeFileSync(f, JSON.stringify([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]]));
  const ok = run('--weights', f, '--replicas', '16', '--groups', '4', '--nodes', '2', '--gpus', '8', '--json');
  assert.equal(ok.status, 0, ok.stderr);
  const out = JSON.parse(ok.stdout) as { phy2log: number[][]; logcnt: number[][]; log2phy: number[][][] };
  assert.deepEqual(out.phy2log, [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]]);
  // Replicas in replica-rank order as eplb.py's phyrank scatter lists them (expert 1: slot 15, then 13).
  assert.deepEqual(out.log2phy, [[[12, -1], [15, 13], [11, -1], [6, -1], [7, 5], [0, 2], [1, -1], [3, -1], [4, -1], [9, -1], [8, 10], [14, -1]]]);
  assert.deepEqual(out.logcnt, [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]]);
  const table = run('--weights', f, '--replicas', '16', '--groups', '4', '--nodes', '2', '--gpus', '8');
  assert.equal(table.status, 0);
  assert.match(table.stdout, /gpu +7 +node +1/);
  assert.match(table.stdout, /balance \(max\/mean GPU load\): before 1\.851 .* after 1\.208/);
  writeFileSync(join(dir, 'bad.json'), '[[1, 2], [3]]');
  for (const args of [
    ['--weights', join(dir, 'bad.json'), '--replicas', '4', '--groups', '1', '--nodes', '1', '--gpus', '2'],
    ['--weights', join(dir, 'missing.json'), '--replicas', '4', '--groups', '1', '--nodes', '1', '--gpus', '2'],
    ['--weights', f, '--replicas', '15', '--groups', '4', '--nodes', '2', '--gpus', '8'],
    ['--weights', f, '--replicas', 'abc', '--groups', '4', '--nodes', '2', '--gpus', '8'],
  ]) {
    const r = run(...args);
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});
