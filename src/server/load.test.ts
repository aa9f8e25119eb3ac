// Bounded load on loopback: 64 concurrent streaming clients for SEEKD_LOAD_SECONDS (default 30) against
// the random-weight test model, a third of them aborting at a random moment. Intended refusals (429 past the
// queue cap) are fine; anything else is an error. At the end every KV block is free and nothing is
// running, and the heap has not grown.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Llm } from '../engine/llm.ts';
import { ensureRandomModel } from '../engine/builtin/random-model.ts';
import { Rng } from '../engine/rng.ts';
import { backendNames } from '../kernels/index.ts';
import { startServer } from './http.ts';

const SECONDS = Number(process.env.SEEKD_LOAD_SECONDS ?? 30);
const CLIENTS = 64;

const llm = await Llm.load({
  model: ensureRandomModel(), backend: backendNames().includes('wasm') ? 'wasm' : 'ref',
  maxModelLen: 512, maxNumSeqs: 32, maxWaiting: 24,
});
const srv = await startServer({ port: 0, webDir: null, keepAliveMs: 1000 }, llm);
after(async () => { await srv.shutdown(2000); await llm.close(); });

test(`${CLIENTS} streaming clients for ${SECONDS} s with random aborts`, { timeout: (SECONDS + 120) * 1000 }, async () => {
  const stats = { ok: 0, aborted: 0, refused: 0, errors: [] as string[] };
  const heap: number[] = [];
  const deadline = performance.now() + SECONDS * 1000;
  const sampler = setInterval(() => heap.push(process.memoryUsage().heapUsed), 1000);
  const client = async (id: number) => {
    const rng = new Rng(1000 + id);
    while (performance.now() < deadline) {
      const ac = new AbortController();
      const abortAfter = rng.next() < 0.33 ? 20 + rng.next() * 1500 : null;
      const timer = abortAfter === null ? null : setTimeout(() => ac.abort(), abortAfter);
      try {
        const res = await fetch(`${srv.url}/v1/chat/completions`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
          body: JSON.stringify({
            messages: [{ role: 'user', content: `Client ${id} says hello ${'again '.repeat(Math.floor(rng.next() * 20))}` }],
            max_tokens: 4 + Math.floor(rng.next() * 44), stream: true, seed: id, stream_options: { include_usage: true },
          }),
        });
        if (res.status === 429 || res.status === 503) {
          await res.text();
          stats.refused++;
          await new Promise((r) => setTimeout(r, 50 + rng.next() * 200));
          continue;
        }
        if (res.status !== 200) { stats.errors.push(`HTTP ${res.status}: ${await res.text()}`); continue; }
        const text = await res.text();
        if (!text.endsWith('data: [DONE]\n\n')) stats.errors.push(`stream without [DONE]: ${text.slice(-200)}`);
        else if (/"error":/.test(text)) stats.errors.push(`error event: ${text.slice(-300)}`);
        else stats.ok++;
      } catch (e) {
        if ((e as Error).name === 'AbortError' || ac.signal.aborted) stats.aborted++;
        else stats.errors.push(String(e));
      } finally {
        if (timer) clearTimeout(timer);
      }
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
  clearInterval(sampler);
  for (let i = 0; i < 500 && llm.engine.numLive > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(stats.errors.slice(0, 5), []);
  assert.ok(stats.ok > CLIENTS, `completed ${stats.ok}`);
  assert.ok(stats.aborted > 0, 'some requests were aborted');
  assert.equal(llm.engine.numLive, 0);
  assert.equal(llm.engine.numRunning + llm.engine.numWaiting, 0);
  assert.equal(llm.engine.kvUsage(), 0);
  // Memory: the heap in the last third of the run is not above the first third's peak by more than 64 MB.
  const third = Math.max(1, Math.floor(heap.length / 3));
  const early = Math.max(...heap.slice(0, third));
  const late = Math.max(...heap.slice(-third));
  assert.ok(late - early < 64 * 1024 * 1024, `heap grew from ${(early / 2 ** 20).toFixed(0)} MB to ${(late / 2 ** 20).toFixed(0)} MB`);
  const m = await (await fetch(`${srv.url}/metrics`)).text();
  assert.match(m, new RegExp(`^vllm:kv_cache_usage_perc\\{model_name="${llm.modelId}"\\} 0$`, 'm'));
  process.stderr.write(`load: ${stats.ok} completed, ${stats.aborted} aborted, ${stats.refused} refused (429), heap ${(early / 2 ** 20).toFixed(0)} -> ${(late / 2 ** 20).toFixed(0)} MB\n`);
});
