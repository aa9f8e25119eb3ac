// `seekd generate --speculative mtp [--num-speculative-tokens K]` end to end: the reference greedy tokens
// with "spec": {drafted, accepted} in --json, and one-line usage errors (exit 2).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSyntheticCheckpoint } from '../src/model/synthetic.ts';
import { REF_DIR, expected, maxAbsDiff, seekd, type SeekdRun } from './helpers.ts';



function usageError(r: SeekdRun, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
}

describe('seekd generate --speculative mtp', () => {
  it('--json: the reference greedy tokens and logits, plus spec counts; text mode reports acceptance', async () => {
    const dir = join(REF_DIR, 'tiny-v3-bf16');
    const p = expected('tiny-v3-bf16').prompts.find((x) => x.prompt.length === 5)!;
    const [a, b, t] = await Promise.all([
      seekd(['generate', '--model', dir, '--ids', p.prompt.join(','), '--max-tokens', '16', '--speculative', 'mtp', '--json']),
      seekd(['generate', '--model', dir, '--ids', p.prompt.join(','), '--max-tokens', '16', '--speculative', 'mtp', '--num-speculative-tokens', '3', '--json', '--backend', 'ref']),
      seekd(['generate', '--model', dir, '--ids', p.prompt.join(','), '--max-tokens', '16', '--speculative', 'mtp', '--num-speculative-tokens', '2']),
    ]);
    for (const [r, K] of [[a, 1], [b, 3]] as const) {
      assert.equal(r.code, 0, r.stderr);
      const o = JSON.parse(r.stdout) as { ids: number[]; logits: number[][]; spec: { drafted: number; accepted: number } };
      assert.deepEqual(o.ids, p.greedy_tokens);
      assert.ok(maxAbsDiff(Float32Array.from(o.logits[3]!), p.decode_logits[2]!) <= 2e-5);
      assert.deepEqual(Object.keys(o.spec), ['drafted', 'accepted']);
      assert.ok(o.spec.drafted >= 15 / (K + 1) && o.spec.drafted <= 15 * K && o.spec.accepted <= o.spec.drafted, JSON.stringify(o.spec));
    }
    assert.equal(t.code, 0, t.stderr);
    assert.equal(t.stdout.trim(), p.greedy_tokens.join(','));
    assert.match(t.stderr, /speculative mtp: \d+\/\d+ drafts accepted \(\d+\.\d%\), \d+ verify steps/);
  });

  it('usage errors: unknown method, K without --speculative, K = 0, with --ep, a model without an MTP module', async () => {
    const dir = join(REF_DIR, 'tiny-v3-bf16');
    const tmp = mkdtempSync(join(tmpdir(), 'seekd-speccli-'));
    try {
      writeSyntheticCheckpoint(tmp, {
        architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 256, hidden_size: 128,
        intermediate_size: 256, moe_intermediate_size: 64, num_hidden_layers: 1, first_k_dense_replace: 1, moe_layer_freq: 1,
        num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: null, kv_lora_rank: 64, qk_nope_head_dim: 32,
        qk_rope_head_dim: 16, v_head_dim: 32, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2, n_group: 1,
        topk_group: 1, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, routed_scaling_factor: 2.5,
        rms_norm_eps: 1e-6, rope_theta: 10000, rope_scaling: null, max_position_embeddings: 512, num_nextn_predict_layers: 1,
        tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1, torch_dtype: 'bfloat16',
      }, { dtype: 'bf16', mtp: false });
      const runs = await Promise.all([
        seekd(['generate', '--model', dir, '--ids', '1', '--speculative', 'eagle']),
        seekd(['generate', '--model', dir, '--ids', '1', '--num-speculative-tokens', '2']),
        seekd(['generate', '--model', dir, '--ids', '1', '--speculative', 'mtp', '--num-speculative-tokens', '0']),
        seekd(['generate', '--model', dir, '--ids', '1', '--speculative', 'mtp', '--ep', '2']),
        seekd(['generate', '--model', tmp, '--ids', '1', '--speculative', 'mtp']),
      ]);
      usageError(runs[0]!, /--speculative must be mtp, got 'eagle'/);
      usageError(runs[1]!, /--num-speculative-tokens needs --speculative mtp/);
      usageError(runs[2]!, /--num-speculative-tokens must be >= 1/);
      usageError(runs[3]!, /--speculative cannot be combined with --ep/);
      usageError(runs[4]!, /has no MTP module/);
    } finally { rmSync(tmp, { recursive: true, force: true }); }
  });
});
