// `seekd perplexity` against an independent implementation: the training forward's next-token
// cross-entropy (src/training, naive MLA on the autograd) on the same windows and weights.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seekd } from '../../../test/helpers.ts';
import { buildTokenizerFiles } from '../../engine/builtin/tokenizer-files.ts';
import { ChatTokenizer } from '../../engine/tokenizer.ts';
import { loadBackend, type Kernels } from '../../kernels/index.ts';
import { DeepseekModel } from '../../model/deepseek.ts';
import { writeSyntheticCheckpoint } from '../../model/synthetic.ts';
import { Gemm } from '../../training/gemm.ts';
import { TrainModel } from '../../training/model.ts';
import { loadTrainParams } from '../../training/params.ts';
import { perplexity } from './perplexity.ts';

const config = {
  model_type: 'deepseek_v3', vocab_size: 2048, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 16, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 256, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 0, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1,
};
const TEXT = 'The quick brown fox jumps over the lazy dog. <｜end▁of▁sentence｜> stays text; so does 1 + 1 = 2.\n';

describe('seekd perplexity', () => {
  let dir: string;
  let k: Kernels;
  let model: DeepseekModel;
  let tok: ChatTokenizer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'seekd-ppl-'));
    const tk = buildTokenizerFiles(config.vocab_size, config.max_position_embeddings);
    writeSyntheticCheckpoint(join(dir, 'm'), config, {
      seed: 5, files: { 'tokenizer.json': JSON.stringify(tk.tokenizerJson), 'tokenizer_config.json': JSON.stringify(tk.tokenizerConfig) },
    });
    writeFileSync(join(dir, 'text.txt'), TEXT);
    k = await loadBackend('wasm', { threads: 1 });
    model = await DeepseekModel.load(join(dir, 'm'), k);
    tok = ChatTokenizer.load(join(dir, 'm'));
  });
  after(async () => {
    model.close();
    await k.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('equals the training forward\'s cross-entropy, in one window and in overlapping windows', () => {
    const { config: c, params } = loadTrainParams(join(dir, 'm'));
    const train = new TrainModel(c, params, new Gemm(k));
    const ids = tok.encodePlain(TEXT);
    const seq = Int32Array.from([tok.bosId!, ...ids]);
    for (const context of [256, 8]) {
      const r = perplexity(model, tok, TEXT, context);
      assert.deepEqual(r.ids, ids);
      assert.equal(r.tokens, ids.length);
      // Windows [a, a + context) overlapping by one: each window's mean CE × its targets.
      let sum = 0;
      for (let a = 0; a + 1 < seq.length; a += context - 1) {
        const w = seq.subarray(a, Math.min(a + context, seq.length));
        sum += train.forward([w], { mtp: false }).mainLoss * (w.length - 1);
      }
      const want = sum / ids.length;
      assert.ok(Math.abs(r.nll - want) < 1e-5, `context ${context}: nll ${r.nll} vs training CE ${want}`);
      assert.ok(Math.abs(r.ppl - Math.exp(r.nll)) < 1e-12 * r.ppl);
      assert.ok(r.nll > 0 && r.nll < 2 * Math.log(c.vocab_size));
    }
  });

  it('prints {tokens, nll, ppl, ids} with --json; bad input is a usage error (exit 2)', async () => {
    const [ok, text, missing, ctx] = await Promise.all([
      seekd(['perplexity', '--model', join(dir, 'm'), '--file', join(dir, 'text.txt'), '--json', '--context', '16']),
      seekd(['perplexity', '--model', join(dir, 'm'), '--file', join(dir, 'text.txt')]),
      seekd(['perplexity', '--model', join(dir, 'm'), '--file', join(dir, 'nope.txt')]),
      seekd(['perplexity', '--model', join(dir, 'm'), '--file', join(dir, 'text.txt'), '--context', '1']),
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const r = JSON.parse(ok.stdout) as { tokens: number; nll: number; ppl: number; ids: number[] };
    assert.deepEqual(Object.keys(r), ['tokens', 'nll', 'ppl', 'ids']);
    const want = perplexity(model, tok, TEXT, 16);
    assert.equal(r.tokens, want.tokens);
    assert.deepEqual(r.ids, want.ids);
    assert.equal(r.nll, want.nll);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^tokens \d+ {2}nll \d+\.\d{4} {2}ppl \d+\.\d{3}\n$/);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot be read/);
    assert.equal(ctx.code, 2);
  });
});
