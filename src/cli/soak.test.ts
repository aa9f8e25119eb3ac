// The soak machinery of `seekd bench serve`: request plans, the /metrics sampler and its summary, a short
// soak in process (fake model), and the command itself against the built-in model (a 12 s soak).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startFakeServer } from '../server/testing.ts';
import { planRequest, runLoad } from './loadgen.ts';
import { parsePrometheus, slope, SoakSampler, summarize, type SoakSample } from './soak.ts';

const BIN = fileURLToPath(new URL('../../bin/seekd.mjs', import.meta.url));
const run = promisify(execFile);

test('parsePrometheus: first sample per family, labels ignored, comments and bad values skipped', () => {
  const m = parsePrometheus([
    '# HELP process_resident_memory_bytes x', '# TYPE process_resident_memory_bytes gauge', 'process_resident_memory_bytes 123456789',
    'vllm:kv_cache_usage_perc{model_name="m"} 0.25', 'vllm:kv_cache_usage_perc{model_name="other"} 0.75',
    'nodejs_heap_size_used_bytes 1.5e7', 'broken_line', 'nan_metric NaN', '',
  ].join('\n'));
  assert.equal(m.get('process_resident_memory_bytes'), 123456789);
  assert.equal(m.get('vllm:kv_cache_usage_perc'), 0.25);
  assert.equal(m.get('nodejs_heap_size_used_bytes'), 1.5e7);
  assert.equal(m.has('broken_line'), false);
  assert.equal(m.has('nan_metric'), false);
});

test('slope and summarize: least squares after the warm-up, start/min/max/end, idle KV from the last sample', () => {
  assert.equal(slope([0, 1, 2, 3], [1, 3, 5, 7]), 2);
  assert.equal(slope([5], [1]), 0);
  const samples: SoakSample[] = Array.from({ length: 11 }, (_, i) => ({
    t: i * 30, rssBytes: i < 2 ? 100 + 50 * i : 200 + 6 * (i * 30) / 60, heapUsedBytes: 10 + (i % 2), heapTotalBytes: 20, externalBytes: 5, kvUsage: i === 10 ? 0 : 0.5, running: 0, waiting: 0,
  }));
  const s = summarize(samples, 60);
  assert.equal(s.samples, 11);
  assert.equal(s.rssBytes.start, 100);
  assert.equal(s.rssBytes.min, 100);
  assert.equal(s.rssBytes.end, 230);
  assert.ok(Math.abs(s.rssBytes.slopePerMin - 6) < 1e-9, String(s.rssBytes.slopePerMin)); // the warm-up jump is left out
  assert.equal(s.kvUsage.max, 0.5);
  assert.equal(s.kvUsageIdle, 0);
  assert.throws(() => summarize([], 0), /no soak samples/);
});

test('planRequest: deterministic, fixed mode as before, random mode within the API ranges, abort rate honoured', () => {
  const cfg = { seed: 3, inputWords: 16, outputLen: 20, randomSampling: true, abortRate: 0.25 };
  assert.deepEqual(planRequest(cfg, 7), planRequest(cfg, 7));
  const fixed = planRequest({ seed: 0, inputWords: 8, outputLen: 4 }, 0);
  assert.equal(fixed.endpoint, '/v1/completions');
  assert.deepEqual({ ...fixed.body, prompt: undefined }, { prompt: undefined, max_tokens: 4, ignore_eos: true, temperature: 0, stream: true, stream_options: { include_usage: true } });
  assert.equal(fixed.abortAfterChunks, null);
  const plans = Array.from({ length: 2000 }, (_, i) => planRequest(cfg, i));
  const aborts = plans.filter((p) => p.abortAfterChunks !== null).length / plans.length;
  assert.ok(aborts > 0.2 && aborts < 0.3, String(aborts));
  const seen = new Set<string>();
  for (const p of plans) {
    const b = p.body;
    for (const k of Object.keys(b)) seen.add(k);
    assert.ok(typeof b.max_tokens === 'number' && b.max_tokens >= 1 && b.max_tokens <= 40);
    assert.ok(typeof b.temperature === 'number' && b.temperature >= 0 && b.temperature <= 2);
    if (b.top_p !== undefined) assert.ok((b.top_p as number) > 0 && (b.top_p as number) <= 1);
    if (b.top_k !== undefined) assert.ok(Number.isInteger(b.top_k) && (b.top_k as number) >= -1);
    if (b.logit_bias !== undefined) for (const [k, v] of Object.entries(b.logit_bias as Record<string, number>)) assert.ok(Number(k) < 2048 && v >= -100 && v <= 100);
    assert.equal(p.endpoint === '/v1/chat/completions', 'messages' in b);
    assert.equal(p.stream, b.stream);
  }
  for (const k of ['temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'stop', 'seed', 'logit_bias', 'presence_penalty', 'frequency_penalty', 'n', 'ignore_eos', 'messages', 'prompt']) {
    assert.ok(seen.has(k), k);
  }
  assert.ok(plans.some((p) => !p.stream) && plans.some((p) => p.abortAfterChunks === 0));
});

test('a 4 s soak in process: aborts and random sampling, no failures, every KV block free at the end', async () => {
  const srv = await startFakeServer({ delayMs: 3, engine: { maxNumSeqs: 8 } });
  try {
    const sampler = new SoakSampler(srv.url, null, 250).start();
    const r = await runLoad({ url: srv.url, concurrency: 6, numPrompts: 0, inputWords: 16, outputLen: 24, seed: 1, durationS: 4, abortRate: 0.3, randomSampling: true });
    const last = await sampler.stop();
    assert.equal(r.failed, 0, r.errors.join('; '));
    assert.equal(r.sent, r.completed + r.aborted + r.rejected);
    assert.ok(r.completed > 10 && r.aborted > 3, JSON.stringify(r));
    assert.ok(r.durationS >= 4 && r.durationS < 30);
    const s = summarize(sampler.samples, 1);
    assert.ok(s.samples >= 10, String(s.samples));
    assert.ok(s.kvUsage.max > 0, 'the load used KV blocks');
    assert.deepEqual([last.running, last.waiting, s.kvUsageIdle], [0, 0, 0]);
    assert.equal(srv.llm.engine.kvUsage(), 0);
    assert.ok(s.rssBytes.min > 0 && s.heapUsedBytes.min > 0);
  } finally {
    await srv.shutdown(1000);
  }
});

test('the sampler reports KV still in use while a request holds blocks (what a block leak looks like)', async () => {
  const srv = await startFakeServer({ delayMs: 20 });
  const ac = new AbortController();
  try {
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
      body: JSON.stringify({ prompt: 'hold these blocks', max_tokens: 500, ignore_eos: true, stream: true }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    const sampler = new SoakSampler(srv.url, null, 1000);
    const last = await sampler.stop(300);
    assert.equal(last.running, 1);
    assert.ok(summarize(sampler.samples, 0).kvUsageIdle > 0);
    ac.abort();
    await reader.cancel().catch(() => {});
  } finally {
    await srv.shutdown(1000);
  }
});

test('seekd bench serve --duration --abort-rate --random-sampling --soak-out: a 12 s soak of the built-in model', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-soak-'));
  try {
    const csv = join(dir, 'soak.csv');
    const { stdout } = await run(process.execPath, [BIN, 'bench', 'serve', '--threads', '1', '--concurrency', '4', '--duration', '12', '--abort-rate', '0.3',
      '--random-sampling', '--input-len', '16', '--output-len', '24', '--soak-out', csv, '--sample-interval', '1', '--json'], { maxBuffer: 16 << 20 });
    const j = JSON.parse(stdout) as {
      durationS: number; abortRate: number; randomSampling: boolean;
      results: { sent: number; completed: number; aborted: number; rejected: number; failed: number; errors: string[]; durationS: number }[];
      soak: { samples: number; kvUsageIdle: number; kvUsage: { max: number }; rssBytes: { min: number; max: number } };
    };
    assert.deepEqual([j.durationS, j.abortRate, j.randomSampling], [12, 0.3, true]);
    const r = j.results[0]!;
    assert.equal(r.failed, 0, r.errors.join('; '));
    assert.ok(r.completed > 0 && r.aborted > 0, JSON.stringify(r));
    assert.ok(r.durationS >= 12);
    assert.ok(j.soak.samples >= 8, String(j.soak.samples));
    assert.ok(j.soak.kvUsage.max > 0);
    assert.equal(j.soak.kvUsageIdle, 0);
    assert.ok(j.soak.rssBytes.min > 50 * 2 ** 20, 'RSS of a real server');
    const rows = readFileSync(csv, 'utf8').trim().split('\n');
    assert.equal(rows[0], 't_s,rss_bytes,heap_used_bytes,heap_total_bytes,external_bytes,kv_usage,running,waiting');
    assert.equal(rows.length - 1, j.soak.samples);
    assert.deepEqual(rows.at(-1)!.split(',').slice(5).map(Number), [0, 0, 0]);
    assert.ok(rows.slice(1).every((l) => l.split(',').slice(1, 5).every((x) => Number(x) > 0)), 'RSS, heap and external memory sampled');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('seekd bench serve: bad soak options are usage errors (exit 2)', async () => {
  for (const [flag, value, msg] of [['--duration', '0', /--duration must be a number > 0/], ['--abort-rate', '1.5', /--abort-rate must be a number >= 0 and <= 1/], ['--sample-interval', 'x', /--sample-interval must be a number >= 0.1/]] as const) {
    await assert.rejects(run(process.execPath, [BIN, 'bench', 'serve', '--url', 'http://127.0.0.1:9', flag, value]), (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 2, e.stderr);
      assert.match(e.stderr, msg);
      return true;
    });
  }
});
