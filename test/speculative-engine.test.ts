// MTP speculative decoding in the engine with the real model (DeepseekRunner): greedy output equals the
// reference tokens on DeepSeek's tiny checkpoints with concurrent requests, the drafts the engine gets
// equal the single-sequence loop's (generate --speculative: so the module's cache is filled correctly
// across chunked prefill, batching and rejected drafts), and the CLI path: `seekd bench serve
// --speculative mtp` starts a server with and one without speculation, and reports acceptance and speed-up
// from the server's vllm:spec_decode_* counters.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { defaultSamplingParams as P, type Delta, type DraftRequest } from '../src/engine/contracts.ts';
import { Engine } from '../src/engine/engine.ts';
import { DeepseekRunner } from '../src/engine/model-runner.ts';
import { byteDecoder } from '../src/engine/testing/fake-runner.ts';
import { loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { generate } from '../src/model/generate.ts';
import { ensureRandomModel } from '../src/engine/builtin/random-model.ts';
import { REF_DIR, expected, seekd } from './helpers.ts';

const tok = { ...byteDecoder, eosTokenIds: [] as number[] };

async function ids(it: AsyncIterable<Delta>): Promise<number[]> {
  const out: number[] = [];
  for await (const d of it) if (d.type === 'text') out.push(...d.tokenIds);
  return out;
}

describe('engine + MTP drafter on tiny-v3-bf16', () => {
  let runner: DeepseekRunner;
  before(async () => {
    runner = await DeepseekRunner.load(join(REF_DIR, 'tiny-v3-bf16'), { backend: 'wasm', numBlocks: 16, numSpeculativeTokens: 2 });
  });
  after(async () => { await runner?.dispose(); });

  it('concurrent greedy requests (chunked prefill) give the reference tokens; drafts are verified', async () => {
    const e = new Engine(runner, tok, { maxModelLen: 256, maxNumSeqs: 8, maxNumBatchedTokens: 7, maxWaiting: 16 });
    let draftTokens = 0;
    e.observer = { onSpec: (s) => { draftTokens += s.drafted; } };
    const prompts = expected('tiny-v3-bf16').prompts;
    const out = await Promise.all(prompts.map((p) => ids(e.generate({ prompt: p.prompt, params: P({ temperature: 0, maxTokens: 16, ignoreEos: true }) }))));
    assert.deepEqual(out, prompts.map((p) => p.greedy_tokens));
    assert.ok(draftTokens > 0);
    assert.equal(e.kvUsage(), 0);
  });

  it('the engine\'s first drafts equal the single-sequence loop\'s (generate --speculative) at every position', async () => {
    const p = expected('tiny-v3-bf16').prompts.find((x) => x.prompt.length >= 8)!;
    // What the engine asks of the drafter, recorded per step (K = 1 so both loops draft the same positions).
    const k1 = await DeepseekRunner.load(join(REF_DIR, 'tiny-v3-bf16'), { backend: 'wasm', numBlocks: 8, numSpeculativeTokens: 1 });
    try {
      const seen: { pos: number; d: number }[] = [];
      const draft = k1.draft.bind(k1);
      const fwd = k1.forward.bind(k1);
      let lastBatch: Parameters<typeof k1.forward>[0] | null = null;
      k1.forward = (b) => { lastBatch = b; return fwd(b); };
      k1.draft = (reqs: readonly DraftRequest[]) => {
        const out = draft(reqs);
        reqs.forEach((r, j) => {
          // The first draft is for the position after the token that follows the last valid one.
          if (r.numDrafts > 0) seen.push({ pos: lastBatch!.seqs[r.index]!.numCached + r.numValid + 1, d: out[j]![0]! });
        });
        return out;
      };
      const e = new Engine(k1, tok, { maxModelLen: 256, maxNumSeqs: 4, maxNumBatchedTokens: 5, maxWaiting: 4 });
      const got = await ids(e.generate({ prompt: p.prompt, params: P({ temperature: 0, maxTokens: 16, ignoreEos: true }) }));
      assert.deepEqual(got, p.greedy_tokens);

      const k = await loadBackend('wasm');
      const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), k);
      try {
        const loop: { pos: number; d: number }[] = [];
        const r = generate(model, p.prompt, { maxTokens: 16, speculative: { method: 'mtp', numSpeculativeTokens: 1, onDraft: (pos, d) => loop.push({ pos: pos + 1, d: d[0]! }) } });
        assert.deepEqual(r.ids, p.greedy_tokens);
        assert.ok(loop.length >= 8);
        assert.deepEqual(seen, loop);
      } finally { model.close(); await k.dispose(); }
    } finally { await k1.dispose(); }
  });
});

describe('seekd bench serve --speculative mtp', () => {
  it('measures a server without and one with speculation: acceptance, tokens per step, speed-up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'seekd-spec-serve-'));
    try {
      const cfg = join(dir, 'config.json');
      writeFileSync(cfg, JSON.stringify({
        architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 2048, hidden_size: 128,
        intermediate_size: 256, moe_intermediate_size: 64, num_hidden_layers: 2, first_k_dense_replace: 1, moe_layer_freq: 1,
        num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: null, kv_lora_rank: 64, qk_nope_head_dim: 32,
        qk_rope_head_dim: 16, v_head_dim: 32, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2, n_group: 2,
        topk_group: 1, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, routed_scaling_factor: 2.5,
        rms_norm_eps: 1e-6, rope_theta: 10000, rope_scaling: null, max_position_embeddings: 512, num_nextn_predict_layers: 1,
        tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1, torch_dtype: 'bfloat16',
      }));
      const model = join(dir, 'model');
      const made = await seekd(['make-checkpoint', '--config', cfg, '--out', model, '--seed', '3']);
      assert.equal(made.code, 0, made.stderr);
      const r = await seekd(['bench', 'serve', '--model', model, '--speculative', 'mtp', '--num-speculative-tokens', '2', '--concurrency', '1,2',
        '--num-prompts', '2', '--input-len', '6', '--output-len', '10', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout) as { results: { completed: number }[]; speculative: { levels: { concurrency: number; drafted: number; accepted: number; steps: number; acceptanceRate: number; meanTokensPerStep: number; speedup: number }[]; baseline: { completed: number }[] } };
      assert.deepEqual(j.results.map((x) => x.completed), [2, 2]);
      assert.deepEqual(j.speculative.baseline.map((x) => x.completed), [2, 2]);
      assert.deepEqual(j.speculative.levels.map((l) => l.concurrency), [1, 2]);
      for (const l of j.speculative.levels) {
        // 2 requests of 10 tokens: the first token comes from the prefill, so 9 more each, in steps of up to 3.
        assert.ok(l.steps >= 2 * 3 && l.steps <= 2 * 9, JSON.stringify(l));
        assert.ok(l.drafted >= l.steps && l.drafted <= 2 * l.steps && l.accepted <= l.drafted, JSON.stringify(l));
        assert.equal(l.meanTokensPerStep, 1 + l.accepted / l.steps);
        assert.ok(l.speedup > 0);
      }
      // The random model has no MTP module: a usage-level refusal before serving.
      const none = await seekd(['serve', '--model', ensureRandomModel(), '--speculative', 'mtp', '--port', '0']);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /needs an MTP module/);
      const bad = await seekd(['serve', '--speculative', 'eagle']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--speculative must be mtp/);
    } finally { rmSync(dir, { recursive: true, force: true }); }
  });
});
