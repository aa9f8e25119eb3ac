import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateChromeTrace } from '../../parallel/trace/validate.ts';

const BIN = new URL('../../../bin/seekd.mjs', import.meta.url).pathname;
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, 'dualpipe', ...args], { encoding: 'utf8' });

test('seekd dualpipe: measured bubbles next to closed forms, SVG, usage errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-dp-'));
  const svg = join(dir, 't.svg');
  const r = run('--pp', '8', '--chunks', '20', '--f', '1', '--b', '2', '--w', '1', '--fb', '2.5', '--svg', svg, '--all', '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { schedules: Array<{ schedule: string; bubble: number; closedForm: number; ranks: number }> };
  assert.deepEqual(out.schedules.map((s) => [s.schedule, s.ranks, s.bubble, s.closedForm]), [
    ['1f1b', 8, 21, 21], ['zb1p', 8, 7, 7], ['dualpipe', 8, 4.5, 4.5], ['dualpipev', 4, 4.5, 4.5],
  ]);
  const text = readFileSync(svg, 'utf8');
  for (const title of ['1F1B', 'ZB1P', 'DualPipe:', 'DualPipeV:']) assert.ok(text.includes(title), title);
  const table = run('--v');
  assert.equal(table.status, 0);
  assert.match(table.stdout, /DualPipeV +4 +\S+ +\S+ +\S+ +\(PP\/2−1\)\(F&B\+B−3W\)/);
  for (const bad of [['--pp', '7'], ['--chunks', '10'], ['--chunks', '21'], ['--f', 'abc'], ['--w', '3']]) {
    const e = run(...bad);
    assert.equal(e.status, 2, bad.join(' '));
    assert.equal(e.stderr.trim().split('\n').length, 1);
  }
});

test('seekd dualpipe --run trains on worker threads, matches the loop and writes a valid trace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-dprun-'));
  const trace = join(dir, 'run.json');
  const r = run('--run', '--v', '--pp', '4', '--chunks', '4', '--hidden', '8', '--seq', '1', '--mb', '2', '--json', '--trace', trace);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { schedule: string; ranks: number; lossesBitIdenticalToLoop: boolean };
  assert.deepEqual([out.schedule, out.ranks, out.lossesBitIdenticalToLoop], ['dualpipev', 2, true]);
  const s = validateChromeTrace(JSON.parse(readFileSync(trace, 'utf8')));
  assert.deepEqual([...s.processes.values()].sort(), ['rank 0', 'rank 1']);
  assert.ok(s.names.has('W') && s.names.has('p2p wait'));
  const bad = run('--trace', join(dir, 'x.json'));
  assert.equal(bad.status, 2);
});
