// `seekd serve --ep N` as a user runs it, on the tiny reference checkpoint (its config and weights, with the
// built-in tokenizer files beside them, since it has none): concurrent token-id completions over two
// expert-parallel ranks give the greedy tokens of the server without --ep; SIGTERM exits 0; bad --ep
// options (and --ep with --quantize) exit 2 before anything loads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnServer } from './bench.ts';
import { ensureRandomModel } from '../../engine/builtin/random-model.ts';
import { REF_DIR, seekd } from '../../../test/helpers.ts';

const TINY = join(REF_DIR, 'tiny-v3-bf16');
const PROMPTS = [[1, 5, 17], [2, 9, 33, 4, 4], [100, 200, 300, 400, 500, 11, 7], [42], [7, 7, 7, 7], [300, 1]];

interface Completion { text: string; tokens: string[]; logprobs: number[] }

async function complete(url: string, prompt: number[]): Promise<Completion> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 10, temperature: 0, ignore_eos: true, logprobs: 0 }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const j = await res.json() as { choices: { text: string; logprobs: { tokens: string[]; token_logprobs: number[] } }[] };
  const c = j.choices[0]!;
  return { text: c.text, tokens: c.logprobs.tokens, logprobs: c.logprobs.token_logprobs };
}

test('seekd serve --ep 2 (tiny-v3): concurrent greedy completions equal the server without --ep (auto and normal modes); SIGTERM stops the ranks and exits 0', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-serve-ep-'));
  try {
    symlinkSync(join(TINY, 'config.json'), join(dir, 'config.json'));
    symlinkSync(join(TINY, 'model.safetensors'), join(dir, 'model.safetensors'));
    const builtin = ensureRandomModel();
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(builtin, f), join(dir, f));
    const args = ['--model', dir, '--max-model-len', '128', '--max-num-seqs', '8', '--max-num-batched-tokens', '16'];
    const run = async (extra: string[]) => {
      const srv = await spawnServer([...args, ...extra]);
      try {
        // All at once: the scheduler batches them (chunked prefill with decodes) through one runtime.
        return await Promise.all(PROMPTS.map((p) => complete(srv.url, p)));
      } finally {
        const code = srv.child.exitCode ?? await new Promise<number | null>((r) => {
          srv.child.once('exit', (c) => r(c));
          srv.child.kill('SIGTERM');
        });
        assert.equal(code, 0);
      }
    };
    const want = await run([]);
    for (const ep of [['--ep', '2'], ['--ep', '2', '--ep-mode', 'normal', '--backend', 'ref']]) {
      const got = await run(ep);
      assert.deepEqual(got.map((c) => [c.text, c.tokens]), want.map((c) => [c.text, c.tokens]), ep.join(' '));
      for (let i = 0; i < want.length; i++) {
        for (let j = 0; j < want[i]!.logprobs.length; j++) assert.ok(Math.abs(got[i]!.logprobs[j]! - want[i]!.logprobs[j]!) < 1e-3, `${ep.join(' ')}: request ${i} token ${j}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('seekd serve/run --ep: usage errors exit 2 before loading', { timeout: 60_000 }, async () => {
  const cases: [string[], RegExp][] = [
    [['serve', '--port', '0', '--ep', '0'], /--ep must be/],
    [['serve', '--port', '0', '--ep', '2', '--quantize', 'fp8'], /--quantize cannot be combined with --ep/],
    [['serve', '--port', '0', '--ep', '2', '--ep-mode', 'fast'], /--ep-mode must be auto, normal or low-latency/],
    [['serve', '--port', '0', '--expert-loads', 'loads.json'], /--expert-loads needs --ep/],
    [['run', '--ep', '2', '--micro-batches', '3', 'hi'], /--micro-batches must be 1 or 2/],
    [['run', '--ep', 'x', 'hi'], /--ep must be/],
  ];
  for (const [args, msg] of cases) {
    const r = await seekd(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
});

test('seekd run --ep 2: the answer of run without --ep, and the process ends by itself (no expert-rank thread left running)', { timeout: 120_000 }, async () => {
  const args = ['run', '--max-tokens', '8', '--temperature', '0', 'Hello there'];
  const plain = await seekd(args);
  const ep = await seekd(['run', '--ep', '2', ...args.slice(1)]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(ep.code, 0, ep.stderr);
  assert.equal(ep.stdout, plain.stdout);
  assert.ok(ep.stdout.trim().length > 0);
});
