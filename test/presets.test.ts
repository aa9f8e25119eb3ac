// The published config.json of each preset parses, and parameterCounts reproduces the parameter totals the
// model authors published for it (to 1%, or to the precision they published).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMoeLayer, loadConfig, parseConfig } from '../src/model/config.ts';
import { parameterCounts } from '../src/model/weight-map.ts';
import { PRESETS, PRESET_INFO, UnknownPresetError, presetConfig, presetShards, presetStorage } from '../src/model/presets.ts';

const B = 1e9;
const near = (got: number, want: number, rel: number, what: string) =>
  assert.ok(Math.abs(got - want) <= rel * want, `${what}: ${(got / B).toFixed(3)}B, published ${(want / B).toFixed(3)}B (±${rel * 100}%)`);
const counts = (name: string) => parameterCounts(parseConfig(presetConfig(name), name));
/** One vocab x hidden matrix (embedding or lm_head; untied in every preset). */
const table = (name: string) => {
  const c = parseConfig(presetConfig(name), name);
  return c.vocab_size * c.hidden_size;
};
// Moonlight's README table ("reported parameter counts exclude the embedding parameters") gives totals
// without embedding and lm_head, and activated counts with one vocab x hidden matrix fewer than ours,
// which counts one embedding row plus the whole lm_head per token.
const embed = (name: string) => 2 * table(name);

describe('presets', () => {
  it('every preset parses with parseConfig and with loadConfig from a directory', () => {
    for (const name of PRESETS) {
      const c = parseConfig(presetConfig(name), name);
      const dir = mkdtempSync(join(tmpdir(), 'seekd-preset-'));
      try {
        writeFileSync(join(dir, 'config.json'), JSON.stringify(presetConfig(name)));
        assert.deepEqual(loadConfig(dir), c, name);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('reads the fields that differ between the presets', () => {
    const lite = parseConfig(presetConfig('v2-lite'));
    assert.equal(lite.model_type, 'deepseek_v2');
    assert.equal(lite.q_lora_rank, null);
    assert.equal(lite.scoring_func, 'softmax');
    assert.equal(lite.rope_scaling?.mscale_all_dim, 0.707);
    assert.equal(lite.quantization_config, null);

    const moon = parseConfig(presetConfig('moonlight'));
    assert.equal(moon.model_type, 'deepseek_v3');
    assert.equal(moon.scoring_func, 'sigmoid');
    assert.equal(moon.routed_scaling_factor, 2.446);
    assert.equal(moon.rope_scaling, null);
    assert.equal(moon.num_nextn_predict_layers, 0);
    assert.equal(moon.rms_norm_eps, 1e-5);
    assert.equal(moon.eos_token_id, 163586);

    // Kimi-K2 declares model_type kimi_k2 and runs as DeepSeek-V3 (V3 routing-weight rule).
    const k2 = parseConfig(presetConfig('kimi-k2'));
    assert.equal(k2.model_type, 'deepseek_v3');
    assert.equal(k2.n_routed_experts, 384);
    assert.equal(k2.n_group, 1);
    assert.equal(k2.rope_scaling?.beta_fast, 1);
    assert.equal(k2.rope_scaling?.factor, 32);
    assert.equal(k2.rope_theta, 50000);
    assert.equal(k2.num_nextn_predict_layers, 0);
    assert.ok(!isMoeLayer(k2, 0) && isMoeLayer(k2, 1) && isMoeLayer(k2, 60));

    // V3.1's quantization_config adds scale_fmt ue8m0 (power-of-two scales, still f32 weight_scale_inv).
    const v31 = parseConfig(presetConfig('v3.1'));
    assert.deepEqual(v31.quantization_config?.weight_block_size, [128, 128]);
    assert.deepEqual(parseConfig(presetConfig('v3')), v31);
    assert.throws(() => parseConfig({ ...presetConfig('v3.1'), quantization_config: { ...(presetConfig('v3.1').quantization_config as object), scale_fmt: 'e5m2' } }),
      /unsupported quantization_config.scale_fmt "e5m2"/);
  });

  it('still refuses model types outside the family, listing kimi_k2 as accepted', () => {
    assert.throws(() => parseConfig({ ...presetConfig('kimi-k2'), model_type: 'kimi_linear' }),
      /unsupported model_type "kimi_linear" \(supported: deepseek_v2, deepseek_v3, kimi_k2\)/);
  });

  it('DeepSeek-V2-Lite and Coder-V2-Lite: 15.7B total; 2.24B activated without embeddings (Moonlight README table, DSV2-Lite column)', () => {
    for (const name of ['v2-lite', 'coder-v2-lite']) {
      const n = counts(name);
      near(n.total, 15.7 * B, 0.01, `${name} total`);
      near(n.activePerToken - table(name), 2.24 * B, 0.01, `${name} active, non-embedding`);
      // DeepSeek's "2.4B activated" (with embeddings) is 2.45B written to two digits by truncation.
      assert.equal(Math.floor(n.activePerToken / 1e8), 24, `${name} active ${n.activePerToken}`);
      assert.equal(n.mtp, 0);
    }
  });

  it('Moonlight-16B-A3B: 15.29B total and 2.24B activated without embeddings (its README), 16B / 3B by name', () => {
    const n = counts('moonlight');
    near(n.total - embed('moonlight'), 15.29 * B, 0.01, 'moonlight total, non-embedding');
    near(n.activePerToken - table('moonlight'), 2.24 * B, 0.01, 'moonlight active, non-embedding');
    near(n.total, 16 * B, 0.01, 'moonlight total');
  });

  it('DeepSeek-V3 / R1 / V3.1: 671B main + 11.5B unique MTP; 36.6B activated including the output head (README_WEIGHTS)', () => {
    for (const name of ['v3', 'r1', 'v3.1']) {
      const n = counts(name);
      near(n.total, 671 * B, 0.01, `${name} total`);
      near(n.activePerToken, 36.6 * B, 0.01, `${name} active`);
      // The checkpoint's MTP layer repeats embed_tokens and shared_head.head (0.9B each): 11.5B without them.
      near(n.mtp - embed(name), 11.5 * B, 0.01, `${name} mtp, unique`);
      near(n.total + n.mtp, 685 * B, 0.01, `${name} on disk`);
    }
  });

  it('Kimi-K2: ~1.03T total, ~32B activated', () => {
    const n = counts('kimi-k2');
    near(n.total, 1.03e12, 0.01, 'kimi-k2 total');
    near(n.activePerToken, 32 * B, 0.01, 'kimi-k2 active');
    assert.equal(n.mtp, 0);
  });

  it('shard counts and storage dtypes of the published checkpoints', () => {
    assert.deepEqual(Object.fromEntries(PRESETS.map((p) => [p, presetShards(p)])),
      { 'v2-lite': 4, 'coder-v2-lite': 4, moonlight: 27, v3: 163, r1: 163, 'v3.1': 163, 'kimi-k2': 61 });
    for (const p of PRESETS) {
      const fp8 = parseConfig(presetConfig(p)).quantization_config !== null;
      assert.deepEqual(presetStorage(p), fp8 ? { dtype: 'fp8', blockSize: [128, 128] } : { dtype: 'bf16' }, p);
      assert.equal(fp8, ['v3', 'r1', 'v3.1', 'kimi-k2'].includes(p), p);
      assert.match(PRESET_INFO[p].repo, /^(deepseek-ai|moonshotai)\//);
    }
  });

  it('an unknown preset is a typed error listing the known ones', () => {
    for (const f of [presetConfig, presetShards, presetStorage]) {
      assert.throws(() => f('v4'), (e: unknown) => e instanceof UnknownPresetError && e.preset === 'v4' &&
        /unknown preset "v4" \(known: v2-lite, coder-v2-lite, moonlight, v3, r1, v3\.1, kimi-k2\)/.test(e.message));
    }
  });
});
