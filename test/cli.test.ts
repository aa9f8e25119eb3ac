// The CLI contract end to end: `node bin/seekd.mjs score|generate|info ...` as outside checks run it.
// Processes run concurrently to keep the suite fast.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../src/weights/checkpoint.ts';
import { REF_DIR, VARIANTS, expected, maxAbsDiff, seekd, type SeekdRun } from './helpers.ts';



function assertUsageError(r: SeekdRun, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

describe('seekd CLI', () => {
  it('generate --json and score --json reproduce the reference (bf16 absorbed, fp8 naive)', async () => {
    // Each spawn costs ~0.5 s of CPU, so the CLI runs one combination per checkpoint; the golden
    // test covers all four in-process.
    const cases = [['tiny-v3-bf16', 'absorb'], ['tiny-v3-fp8', 'naive']] as const;
    await Promise.all(cases.map(async ([v, attn]) => {
      const p = expected(v, attn).prompts.find((x) => x.prompt.length === 5)!;
      const dir = join(REF_DIR, v);
      const [gen, score] = await Promise.all([
        seekd(['generate', '--model', dir, '--ids', p.prompt.join(','), '--max-tokens', '16', '--temperature', '0', '--attn', attn, '--json']),
        seekd(['score', '--model', dir, '--ids', p.prompt.join(','), '--attn', attn, '--all-positions', '--json']),
      ]);
      assert.equal(gen.code, 0, gen.stderr);
      const g = JSON.parse(gen.stdout) as { ids: number[]; logits: number[][] };
      assert.deepEqual(g.ids, p.greedy_tokens);
      assert.equal(g.logits.length, 16);
      assert.ok(maxAbsDiff(g.logits[0]!, p.prefill_last_logits) <= 2e-5);
      for (let j = 1; j < 16; j++) assert.ok(maxAbsDiff(g.logits[j]!, p.decode_logits[j - 1]!) <= 2e-5, `${v} ${attn} step ${j}`);
      assert.equal(score.code, 0, score.stderr);
      const s = JSON.parse(score.stdout) as { logits: number[][] };
      assert.equal(s.logits.length, 5);
      assert.ok(maxAbsDiff(s.logits[4]!, p.prefill_last_logits) <= 2e-5);
    }));
  });

  it('score without --all-positions prints one row; generate without --json prints the ids', async () => {
    const dir = join(REF_DIR, 'tiny-v3-fp8');
    const p = expected('tiny-v3-fp8').prompts[0]!;
    const [score, gen] = await Promise.all([
      seekd(['score', '--model', dir, '--ids', p.prompt.join(','), '--json']),
      seekd(['generate', '--model', dir, '--ids', p.prompt.join(','), '--max-tokens', '4']),
    ]);
    assert.equal(score.code, 0, score.stderr);
    const s = JSON.parse(score.stdout) as { logits: number[] };
    assert.equal(s.logits.length, 512);
    assert.ok(maxAbsDiff(s.logits, p.prefill_last_logits) <= 2e-5);
    assert.equal(gen.code, 0, gen.stderr);
    assert.equal(gen.stdout.trim(), p.greedy_tokens.slice(0, 4).join(','));
  });

  it('info reports parameter counts that match the checkpoint headers', async () => {
    const runs = await Promise.all(VARIANTS.map((v) => seekd(['info', '--model', join(REF_DIR, v), '--json'])));
    VARIANTS.forEach((v, i) => {
      const r = runs[i]!;
      assert.equal(r.code, 0, r.stderr);
      const info = JSON.parse(r.stdout) as { params: { total: number; active_per_token: number; mtp: number }; memory: { kv_bytes_per_token: number } };
      // Independently: every element of every tensor in the files, except FP8 scales and the MTP layer (model.layers.3.*).
      const ck = Checkpoint.open(join(REF_DIR, v));
      let total = 0, mtp = 0;
      for (const [name, t] of ck.tensors) {
        if (name.endsWith('_scale_inv')) continue;
        const n = t.shape.reduce((a, b) => a * b, 1);
        if (name.startsWith('model.layers.3.')) mtp += n; else total += n;
      }
      ck.close();
      assert.equal(info.params.total, total, v);
      assert.equal(info.params.mtp, mtp, v);
      // Active per token by hand for the tiny shape: everything but the routed experts and the
      // embedding matrix, plus 4 of 16 experts in each of the 2 MoE layers and one embedding row.
      const expertParams = 3 * 64 * 256;
      const routedAll = 2 * 16 * expertParams;
      assert.equal(info.params.active_per_token, total - routedAll + 2 * 4 * expertParams - 512 * 256 + 256);
      assert.equal(info.memory.kv_bytes_per_token, 3 * (128 + 32) * 4);
    });
    const text = await seekd(['info', '--model', join(REF_DIR, 'tiny-v3-bf16')]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /deepseek_v3, 3 layers \(1 dense, 2 MoE\)/);
  });

  it('bad input: one-line error, exit code 2, no stack trace', async () => {
    const dir = join(REF_DIR, 'tiny-v3-fp8');
    const tmp = mkdtempSync(join(tmpdir(), 'seekd-cli-'));
    try {
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      writeFileSync(join(tmp, 'config.json'), JSON.stringify({ ...cfg, topk_method: 'foo' }));
      const runs = await Promise.all([
        seekd(['generate', '--model', join(tmp, 'nope'), '--ids', '1,2']),
        seekd(['score', '--model', dir, '--ids', '1,x', '--json']),
        seekd(['score', '--model', dir, '--ids', '1,512', '--json']),
        seekd(['generate', '--model', tmp, '--ids', '1']),
        seekd(['score', '--model', dir, '--ids', '1', '--attn', 'flash']),
        seekd(['score', '--model', dir, '--ids', '1', '--backend', 'nosuch']),
        seekd(['generate', '--model', dir, '--ids', '1', '--max-tokens', '-3']),
        seekd(['info', '--model', tmp]),
      ]);
      assertUsageError(runs[0]!, /does not exist/);
      assertUsageError(runs[1]!, /'x' is not a token id/);
      assertUsageError(runs[2]!, /token id 512 is outside the vocabulary \[0, 512\)/);
      assertUsageError(runs[3]!, /unsupported topk_method "foo"/);
      assertUsageError(runs[4]!, /--attn must be absorb or naive/);
      assertUsageError(runs[5]!, /unknown --backend 'nosuch'/);
      assert.equal(runs[6]!.code, 2);
      assertUsageError(runs[7]!, /unsupported topk_method "foo"/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
