// A real DeepSeek checkpoint's size in CI: DeepSeek-V2-Lite's exact config, tensor names, shapes and
// 4-shard layout (31 GB of BF16), written as sparse all-zero files (no disk, no time), then
// - the refusal path: with less memory than the plan needs, `score` stops before reading weights, exit
//   code 2, with the plan and the fix (--quantize fp8);
// - the path beyond wasm32's 4 GiB: loaded with --quantize fp8 on the wasm backend (16 GB of FP8 codes
//   and scales spread over several wasm memories), a forward gives finite logits, and the peak RSS while
//   loading stays within 1 GiB of the resident size once loaded.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seekd } from './helpers.ts';
import { presetConfig, presetShards } from '../src/model/presets.ts';
import { writeSyntheticCheckpoint } from '../src/model/synthetic.ts';



const GiB = 2 ** 30;

describe('DeepSeek-V2-Lite at real size (sparse zeros)', () => {
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'seekd-v2lite-'));
    await writeSyntheticCheckpoint(dir, presetConfig('v2-lite'), { fill: 'zeros', shards: 4 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('info gives the plan: BF16 does not fit 20 GiB, FP8 does', async () => {
    const env = { SEEKD_MEMORY_LIMIT: String(20 * GiB) };
    const [bf16, fp8] = await Promise.all([
      seekd(['info', '--model', dir, '--json'], env),
      seekd(['info', '--model', dir, '--json', '--quantize', 'fp8'], env),
    ]);
    assert.equal(bf16.code, 0, bf16.stderr);
    assert.equal(fp8.code, 0, fp8.stderr);
    const a = JSON.parse(bf16.stdout) as { params: { total: number }; plan: { fits: boolean; weights_bytes: number; fixes: string[] } };
    const b = JSON.parse(fp8.stdout) as { plan: { fits: boolean; weights_bytes: number } };
    assert.ok(Math.abs(a.params.total / 15.7e9 - 1) < 0.01, `${a.params.total} parameters`);
    assert.equal(a.plan.fits, false);
    assert.ok(a.plan.fixes.some((f) => f.startsWith('--quantize fp8')), a.plan.fixes.join('; '));
    assert.equal(b.plan.fits, true);
    // FP8: about one byte per parameter of the quantized matrices instead of two.
    assert.ok(b.plan.weights_bytes < 0.6 * a.plan.weights_bytes, `${b.plan.weights_bytes} vs ${a.plan.weights_bytes}`);
  });

  it('score refuses before reading weights when the plan does not fit: exit 2, numbers and fixes', async () => {
    const r = await seekd(['score', '--model', dir, '--ids', '1,2,3'], { SEEKD_MEMORY_LIMIT: String(8 * GiB) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /does not fit: it needs [\d.]+ GiB but 8\.00 GiB is available/);
    assert.match(r.stderr, /--quantize fp8/);
    assert.match(r.stderr, /memory plan: /);
    assert.ok(r.ms < 15_000, `refused after ${r.ms} ms: it must not read the weights first`);
  });

  it('loads beyond 4 GiB with --quantize fp8 on wasm: finite logits, peak RSS <= resident + 1 GiB', async () => {
    const r = await seekd(['score', '--model', dir, '--quantize', 'fp8', '--ids', '1,2,3', '--json', '--stats']);
    assert.equal(r.code, 0, r.stderr);
    const logits = (JSON.parse(r.stdout) as { logits: number[] }).logits;
    assert.equal(logits.length, 102400);
    assert.ok(logits.every(Number.isFinite));
    const stats = JSON.parse(/^stats: (.*)$/m.exec(r.stderr)![1]!) as { backend: string; memories: number; rss_after_load: number; peak_rss: number };
    assert.equal(stats.backend, 'wasm', 'score defaults to the fastest backend');
    assert.ok(stats.memories >= 4, `${stats.memories} wasm memories`);
    assert.ok(stats.rss_after_load > 15 * GiB, `resident ${stats.rss_after_load}`);
    assert.ok(stats.peak_rss <= stats.rss_after_load + GiB, `peak ${stats.peak_rss} vs resident ${stats.rss_after_load}`);
  });
});

// The published layouts of the big ones: DeepSeek-V3 (163 FP8 shards with weight_scale_inv, the MTP
// layer 61) and Kimi-K2 (61 shards), as sparse files: described and planned from the headers, and
// refused with their plan, never crashed or half-loaded.
for (const preset of ['v3', 'kimi-k2'] as const) {
  describe(`${preset} at real size (sparse zeros, published shards)`, () => {
    let dir: string;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), `seekd-${preset}-`));
      await writeSyntheticCheckpoint(dir, presetConfig(preset), { fill: 'zeros', shards: presetShards(preset) });
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('info reads every header and plans it; score refuses with the plan, exit 2', async () => {
      const [info, score] = await Promise.all([
        seekd(['info', '--model', dir, '--json']),
        seekd(['score', '--model', dir, '--ids', '1,2,3']),
      ]);
      assert.equal(info.code, 0, info.stderr);
      const i = JSON.parse(info.stdout) as { params: { total: number; mtp: number }; dtypes: Record<string, number>; plan: { fits: boolean } };
      assert.ok(i.params.total > (preset === 'v3' ? 670e9 : 1.02e12), `${i.params.total}`);
      if (preset === 'v3') assert.ok(i.params.mtp > 11e9, `${i.params.mtp} MTP parameters`);
      assert.ok(i.dtypes.F8_E4M3! > 0.9 * i.params.total);
      assert.equal(i.plan.fits, false);
      assert.equal(score.code, 2, score.stderr);
      assert.match(score.stderr, /does not fit/);
    });
  });
}
