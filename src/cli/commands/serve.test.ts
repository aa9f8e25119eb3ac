// The serve/run/bench commands as a user runs them (child processes, built-in model).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { spawnServer } from './bench.ts';

const BIN = fileURLToPath(new URL('../../../bin/seekd.mjs', import.meta.url));
const run = promisify(execFile);

test('seekd serve: answers, then SIGTERM drains the in-flight stream (503 for new requests) and exits 0', async () => {
  const srv = await spawnServer(['--max-model-len', '512']);
  const health = await (await fetch(`${srv.url}/health`)).json();
  assert.deepEqual(health, { status: 'ok' });
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 60, ignore_eos: true, stream: true }),
  });
  const reader = res.body!.getReader();
  await reader.read();
  const exited = new Promise<number | null>((r) => srv.child.once('exit', (code) => r(code)));
  srv.child.kill('SIGTERM');
  // The signal is handled between engine steps: wait until /health reports draining.
  for (let i = 0; i < 200; i++) {
    const h = await fetch(`${srv.url}/health`).then((r) => r.status, () => 'closed');
    if (h !== 200) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  const late = await fetch(`${srv.url}/v1/models`).then((r) => r.status, () => 'closed');
  assert.ok(late === 503 || late === 'closed', String(late));
  let text = '';
  for (;;) { const { value, done } = await reader.read(); if (done) break; text += new TextDecoder().decode(value); }
  assert.match(text, /"finish_reason":"length"/);
  assert.match(text, /data: \[DONE\]\n\n$/);
  assert.equal(await exited, 0);
});

test('seekd run: one answer per piped line, /bye ends; usage errors exit 2', async () => {
  const child = spawn(process.execPath, [BIN, 'run', '--max-tokens', '6', '--temperature', '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stdin.end('Hi there\nAnd again\n/bye\nnot read\n');
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  assert.equal(code, 0);
  assert.equal(out.split('\n').filter((l) => l.length > 0).length >= 2, true, out);
  await assert.rejects(run(process.execPath, [BIN, 'run', '--backend', 'nope', 'x']), (e: { code: number; stderr: string }) => {
    assert.equal(e.code, 2);
    assert.match(e.stderr, /^seekd: UsageError: --backend must be one of/);
    return true;
  });
});

test('seekd bench serve --json against a URL', async () => {
  const srv = await spawnServer([]);
  try {
    const { stdout } = await run(process.execPath, [BIN, 'bench', 'serve', '--url', srv.url, '--concurrency', '1,2', '--num-prompts', '2', '--output-len', '4', '--input-len', '8', '--json']);
    const j = JSON.parse(stdout) as { results: { concurrency: number; completed: number; failed: number; outputTokens: number; ttftMs: { p50: number } }[] };
    assert.deepEqual(j.results.map((r) => [r.concurrency, r.completed, r.failed, r.outputTokens]), [[1, 2, 0, 8], [2, 2, 0, 8]]);
    assert.ok(j.results[0]!.ttftMs.p50 > 0);
  } finally {
    await srv.stop();
  }
});
