// `--quantize fp8` as a user runs it (child processes): score/generate on tiny-v3-bf16 reproduce the
// reference outputs of tiny-v3-fp8 (its quantized twin), info reports the FP8 checkpoint's weight
// bytes, serve and run load the BF16 random model quantized (the built-in model is stored in FP8 already,
// so there the option changes nothing), and any other format is a one-line usage error with exit code 2
// on every command that takes the option.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnServer } from '../src/cli/commands/bench.ts';
import { ensureRandomModel } from '../src/engine/builtin/random-model.ts';
import { REF_DIR, expected, maxAbsDiff, seekd, type SeekdRun } from './helpers.ts';



const BF16 = join(REF_DIR, 'tiny-v3-bf16');
const FP8 = join(REF_DIR, 'tiny-v3-fp8');

describe('seekd --quantize fp8', () => {
  it('score and generate on tiny-v3-bf16 reproduce tiny-v3-fp8\'s reference outputs (ref and wasm)', async () => {
    const p = expected('tiny-v3-fp8').prompts.find((x) => x.prompt.length === 5)!;
    const ids = p.prompt.join(',');
    const [score, gen] = await Promise.all([
      seekd(['score', '--model', BF16, '--quantize', 'fp8', '--backend', 'ref', '--ids', ids, '--json']),
      seekd(['generate', '--model', BF16, '--quantize', 'fp8', '--backend', 'wasm', '--ids', ids, '--max-tokens', '16', '--temperature', '0', '--json']),
    ]);
    assert.equal(score.code, 0, score.stderr);
    const s = JSON.parse(score.stdout) as { logits: number[] };
    assert.ok(maxAbsDiff(s.logits, p.prefill_last_logits) <= 2e-5, 'score logits');
    assert.equal(gen.code, 0, gen.stderr);
    const g = JSON.parse(gen.stdout) as { ids: number[]; logits: number[][] };
    assert.deepEqual(g.ids, p.greedy_tokens);
    assert.ok(maxAbsDiff(g.logits[0]!, p.prefill_last_logits) <= 2e-5);
    for (let j = 1; j < 16; j++) assert.ok(maxAbsDiff(g.logits[j]!, p.decode_logits[j - 1]!) <= 2e-5, `generate step ${j}`);
    // Without --quantize the BF16 checkpoint's logits are not the FP8 ones (the test can tell them apart).
    const plain = await seekd(['score', '--model', BF16, '--backend', 'ref', '--ids', ids, '--json']);
    assert.ok(maxAbsDiff((JSON.parse(plain.stdout) as { logits: number[] }).logits, p.prefill_last_logits) > 1e-3);
  });

  it('info --quantize fp8 reports the weight bytes of the FP8 checkpoint (codes + block scales)', async () => {
    const [q, fp8, bf16] = await Promise.all([
      seekd(['info', '--model', BF16, '--quantize', 'fp8', '--json']),
      seekd(['info', '--model', FP8, '--json']),
      seekd(['info', '--model', BF16, '--json']),
    ]);
    for (const r of [q, fp8, bf16]) assert.equal(r.code, 0, r.stderr);
    const bytes = (r: SeekdRun) => (JSON.parse(r.stdout) as { memory: { weights_bytes: number } }).memory.weights_bytes;
    assert.equal(bytes(q), bytes(fp8));
    assert.ok(bytes(bf16) > bytes(q));
  });

  it('serve and run load a BF16 model quantized and answer (logprobs show FP8 weights); the FP8 built-in model as stored', async () => {
    // The same greedy request against the random BF16 model served as stored and quantized: both answer,
    // and the first token's log-probability differs (the weights did change format). The built-in model
    // is an FP8 checkpoint: --quantize fp8 loads it as stored, to the same log-probability.
    const RANDOM = ensureRandomModel();
    const firstLogprob = async (extra: string[]) => {
      const srv = await spawnServer(['--max-model-len', '256', '--backend', 'ref', ...extra]);
      try {
        const res = await fetch(`${srv.url}/v1/completions`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: 'Hello', max_tokens: 4, ignore_eos: true, temperature: 0, logprobs: 1 }),
        });
        assert.equal(res.status, 200);
        const j = await res.json() as { usage: { completion_tokens: number }; choices: { logprobs: { token_logprobs: number[] } }[] };
        assert.equal(j.usage.completion_tokens, 4);
        return j.choices[0]!.logprobs.token_logprobs[0]!;
      } finally {
        await srv.stop();
      }
    };
    const [stored, quantized] = await Promise.all([firstLogprob(['--model', RANDOM]), firstLogprob(['--model', RANDOM, '--quantize', 'fp8'])]);
    assert.ok(Number.isFinite(quantized) && quantized !== stored, `logprob ${quantized} (fp8) vs ${stored} (stored)`);
    const [builtin, builtinQ] = await Promise.all([firstLogprob([]), firstLogprob(['--quantize', 'fp8'])]);
    assert.ok(Number.isFinite(builtin) && builtinQ === builtin, `built-in: logprob ${builtinQ} (--quantize fp8) vs ${builtin} (stored)`);
    const r = await seekd(['run', '--model', RANDOM, '--quantize', 'fp8', '--max-model-len', '256', '--max-tokens', '4', '--temperature', '0', 'Hi']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.trim().length > 0);
  });

  it('any other format is a one-line usage error (exit 2) on serve, run, generate, score and info', async () => {
    const cmds = [
      ['serve', '--port', '0', '--quantize', 'int8'],
      ['run', '--quantize', 'FP8', 'hi'],
      ['generate', '--model', BF16, '--ids', '1', '--quantize', 'int4'],
      ['score', '--model', BF16, '--ids', '1', '--quantize', ''],
      ['info', '--model', BF16, '--quantize', 'bf16'],
    ];
    const runs = await Promise.all(cmds.map((c) => seekd(c)));
    runs.forEach((r, i) => {
      const what = cmds[i]!.join(' ');
      assert.equal(r.code, 2, `${what}: exit code (stderr: ${r.stderr})`);
      assert.equal(r.stdout, '', what);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${what}: one line, got ${r.stderr}`);
      assert.match(lines[0]!, /--quantize must be fp8, got '/, what);
    });
    const ep = await seekd(['generate', '--model', BF16, '--ids', '1', '--quantize', 'fp8', '--ep', '2']);
    assert.equal(ep.code, 2, ep.stderr);
    assert.match(ep.stderr, /--quantize cannot be combined with --ep/);
  });
});
