#!/usr/bin/env node
// Runs every `*.test.ts` under src/, test/ and bench/ with node's built-in test runner through tsx.
// Node 20's `--test` does not expand globs or pick up .ts files, hence this small launcher.
// Usage: node scripts/test.mjs [substring filter ...]
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const matched = ['src', 'test', 'bench']
  .flatMap((d) => { try { return walk(join(root, d), []); } catch { return []; } })
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
// `*.node22.test.ts`: tests of client packages that need Node >= 22 (the AI SDK, LangChain); left out before.
const node22 = Number(process.versions.node.split('.')[0]) >= 22;
const files = node22 ? matched : matched.filter((f) => !f.endsWith('.node22.test.ts'));
if (files.length < matched.length) {
  console.error(`test.mjs: ${matched.length - files.length} *.node22.test.ts file(s) left out under Node ${process.version} (they need Node >= 22)`);
}
if (files.length === 0 && matched.length > 0) process.exit(0); // only Node >= 22 files matched
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// Which runtime this run is on (CI runs the suite under Node 20 and Node 24; the children use process.execPath).
console.error(`test.mjs: ${files.length} test files under Node ${process.version} (${process.execPath})`);
// WebGPU on a CPU-only machine runs through Dawn's OpenGL ES backend on Mesa (surfaceless EGL).
const env = { ...process.env, EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless' };
// Two test files at a time by default: node's own default (available cores - 1) runs them one by one on a
// 2-core machine, where most files leave a core idle (one JS thread, child processes waited on).
const concurrency = process.env.SEEKD_TEST_CONCURRENCY ?? '2';
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files], {
  cwd: root, stdio: 'inherit', env,
});
process.exit(r.status ?? 1);
