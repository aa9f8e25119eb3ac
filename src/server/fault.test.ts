// Faults while serving, end to end over HTTP on a real model, the random-weight test model (wasm backend, 2 threads):
// a wasm pool worker dies INSIDE a forward (WasmPool.dieInNextRunForTest, armed between two decode
// steps while two requests run). Both in-flight requests get OpenAI error JSON naming the cause — the
// stream as an error event then [DONE], the plain request as a 500 — /health says "recovering" (503) and
// new requests get 503 while the runner is reloaded, then /health is ok again and a new request gets the
// same greedy text as before the failure. A serve whose model cannot be read exits non-zero, never hangs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Llm } from '../engine/llm.ts';
import type { EngineHealth } from '../engine/engine.ts';
import { ensureRandomModel } from '../engine/builtin/random-model.ts';
import { WasmPool } from '../kernels/wasm/pool.ts';
import { SafetensorsError } from '../weights/errors.ts';
import { startServer } from './http.ts';

const BIN = new URL('../../bin/seekd.mjs', import.meta.url).pathname;

interface ErrorBody { error: { message: string; type: string; code: string } }

test('a wasm worker dying mid-forward: in-flight requests get the error, /health recovers, later requests are served', { timeout: 180_000 }, async () => {
  const llm = await Llm.load({ model: ensureRandomModel(), backend: 'wasm', threads: 2, maxNumSeqs: 4, maxModelLen: 512, maxNumBatchedTokens: 256 });
  const srv = await startServer({ port: 0, webDir: null }, llm);
  const engine = llm.engine;
  const healthLog: EngineHealth[] = [];
  const waiters: [EngineHealth, () => void][] = [];
  engine.onHealthChange((h) => { healthLog.push(h); for (const [w, r] of waiters) if (w === h) r(); });
  const whenHealth = (h: EngineHealth) => new Promise<void>((r) => (engine.health === h ? r() : waiters.push([h, r])));
  // Hold the reload until the test has looked at the server while it recovers.
  const rebuild = engine.recovery.rebuildRunner!;
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  engine.recovery.rebuildRunner = async (cause) => { await gate; return rebuild(cause); };
  const post = (path: string, body: unknown) => fetch(`${srv.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const greedy = { prompt: 'Hello there', max_tokens: 8, temperature: 0, ignore_eos: true };
  try {
    const before = await post('/v1/completions', greedy);
    assert.equal(before.status, 200);
    const textBefore = ((await before.json()) as { choices: { text: string }[] }).choices[0]!.text;

    // Arm the death once a decode step ran with both requests in it: the NEXT forward's first
    // multi-threaded op loses worker 1 (the engine yields between steps, so this is before it starts).
    let armedAt = -1;
    const prev = engine.observer.onStep;
    let steps = 0;
    engine.observer.onStep = (out, ms) => {
      prev?.(out, ms);
      steps++;
      if (armedAt < 0 && out.seqs.length === 2 && out.seqs.every((s) => s.numNew === 1)) {
        armedAt = steps;
        WasmPool.dieInNextRunForTest(1);
      }
    };
    const [streamed, plain] = await Promise.all([
      post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 200, stream: true, temperature: 0, ignore_eos: true })
        .then(async (r) => ({ status: r.status, text: await r.text() })),
      post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 200, temperature: 0, ignore_eos: true })
        .then(async (r) => ({ status: r.status, body: (await r.json()) as ErrorBody })),
    ]);
    assert.ok(armedAt > 0, 'the two requests never decoded together');
    assert.equal(steps, armedAt, 'no step completed after the worker died');

    // The plain request: 500, OpenAI error JSON naming the cause.
    assert.equal(plain.status, 500);
    assert.equal(plain.body.error.code, 'model_failure');
    assert.equal(plain.body.error.type, 'server_error');
    assert.match(plain.body.error.message, /WasmWorkerDiedError: wasm worker 1 died.*restarting the model/);
    // The stream: 200 (headers were sent), content chunks, then an error event and [DONE]; no finish chunk.
    assert.equal(streamed.status, 200);
    const events = streamed.text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
    assert.equal(events.at(-1), '[DONE]');
    const err = JSON.parse(events.at(-2)!) as ErrorBody;
    assert.equal(err.error.code, 'model_failure');
    assert.match(err.error.message, /WasmWorkerDiedError/);
    const chunks = events.slice(0, -2).map((e) => JSON.parse(e) as { choices: { delta: { content?: string }; finish_reason: string | null }[] });
    assert.ok(chunks.some((c) => c.choices[0]?.delta.content), 'tokens streamed before the failure');
    assert.ok(chunks.every((c) => c.choices.every((ch) => ch.finish_reason === null)));

    // While the runner reloads: /health 503 "recovering" with the cause, new requests 503.
    assert.equal(engine.health, 'recovering');
    const h1 = await fetch(`${srv.url}/health`);
    assert.equal(h1.status, 503);
    const hb = (await h1.json()) as { status: string; error: string };
    assert.equal(hb.status, 'recovering');
    assert.match(hb.error, /wasm worker 1 died/);
    const refused = await post('/v1/completions', greedy);
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as ErrorBody).error.code, 'model_unavailable');

    release();
    await whenHealth('ok');
    assert.deepEqual(healthLog, ['recovering', 'ok']);
    assert.equal((await fetch(`${srv.url}/health`)).status, 200);
    const after = await post('/v1/completions', greedy);
    assert.equal(after.status, 200);
    assert.equal(((await after.json()) as { choices: { text: string }[] }).choices[0]!.text, textBefore, 'the reloaded runner computes as before');
  } finally {
    WasmPool.dieInNextRunForTest(0);
    release();
    await srv.shutdown(1_000);
    await llm.close();
  }
});

test('a shard truncated after its header was validated: loading fails with a typed read error', { timeout: 120_000 }, async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'seekd-trunc-'));
  try {
    const dir = join(tmp, 'm');
    cpSync(ensureRandomModel(), dir, { recursive: true });
    const shard = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).map((f) => join(dir, f))[0]!;
    const size = statSync(shard).size;
    // The headers are read and validated before the first tensor is loaded; the file shrinks right then.
    let truncated = false;
    const err = await Llm.load({ model: dir, backend: 'ref', maxNumSeqs: 1, maxModelLen: 128,
      onProgress: () => { if (!truncated) { truncated = true; truncateSync(shard, size - 4096); } } }).then(() => null, (e: unknown) => e);
    assert.ok(truncated);
    assert.ok(err instanceof SafetensorsError, String(err));
    assert.equal(err.rule, 'io');
    assert.match(err.message, /short read|changed/);

    // `seekd serve` on a model it cannot read exits non-zero with the error instead of answering
    // "loading" forever (the listener is closed).
    const child = spawn(process.execPath, [BIN, 'serve', '--model', dir, '--port', '0', '--backend', 'ref'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    assert.notEqual(code, 0, stderr);
    assert.match(stderr, /SafetensorsError|data-out-of-bounds|io/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
