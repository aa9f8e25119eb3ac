// `seekd train` end to end on a tiny DeepSeek-V3 config (MLA, MoE with router bias, one MTP module) and a
// small data directory (the built-in tokenizer; text and chat documents): PP 1 writes the JSON log, the
// loss-curve SVG, progress lines and a checkpoint that `seekd generate` loads; a DualPipe PP 2 run
// stopped after step 2 and resumed gives PP 1's log and checkpoint byte for byte.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seekd } from '../../../test/helpers.ts';
import { buildTokenizerFiles } from '../../engine/builtin/tokenizer-files.ts';

const CONFIG = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 2048, hidden_size: 32, intermediate_size: 48,
  moe_intermediate_size: 16, num_hidden_layers: 3, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 16, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 1, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1,
};
const RUN = ['--steps', '4', '--seq-len', '16', '--micro-batch', '2', '--chunks', '4', '--lr', '1e-2', '--warmup', '1', '--eval-windows', '4', '--eval-every', '2'];

describe('seekd train', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'seekd-train-'));
    const data = join(dir, 'data');
    mkdirSync(data);
    const tk = buildTokenizerFiles(CONFIG.vocab_size, 4096);
    writeFileSync(join(data, 'tokenizer.json'), JSON.stringify(tk.tokenizerJson));
    writeFileSync(join(data, 'tokenizer_config.json'), JSON.stringify(tk.tokenizerConfig));
    const docs: string[] = [];
    for (let i = 0; i < 40; i++) docs.push(JSON.stringify({ text: `The quick brown fox jumps over the lazy dog ${i} times. A stitch in time saves nine.` }));
    for (let i = 0; i < 20; i++) docs.push(JSON.stringify({ messages: [{ role: 'user', content: `What is ${i} plus one?` }, { role: 'assistant', content: `It is ${i + 1}.` }] }));
    writeFileSync(join(data, 'train.jsonl'), docs.join('\n') + '\n');
    writeFileSync(join(data, 'val.jsonl'), docs.slice(35, 45).join('\n') + '\n');
    writeFileSync(join(dir, 'config.json'), JSON.stringify(CONFIG));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const log = (out: string) => readFileSync(join(dir, out, 'train-log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const common = () => ['--config', join(dir, 'config.json'), '--data', join(dir, 'data'), ...RUN];

  it('PP 1: log, loss curve, progress, a checkpoint generate loads; DualPipe PP 2 stopped and resumed = PP 1 byte for byte', async () => {
    const a = await seekd(['train', ...common(), '--out', join(dir, 'a'), '--json']);
    assert.equal(a.code, 0, a.stderr);
    const sum = JSON.parse(a.stdout) as { steps: number; lastLoss: number; evalLoss: number; peakGflops: number; meanTokensPerSec: number };
    assert.equal(sum.steps, 4);
    assert.ok(sum.peakGflops > 0 && sum.meanTokensPerSec > 0);
    assert.match(a.stderr, /PP 1; wasm f32 GEMM peak/);
    assert.match(a.stderr, /\] 4\/4 loss \d+\.\d+ val \d+\.\d+ \d+ tok\/s ETA/);
    const la = log('a');
    const steps = la.filter((e) => 'mainLoss' in e);
    assert.deepEqual(steps.map((e) => e.step), [1, 2, 3, 4]);
    assert.deepEqual(la.filter((e) => 'evalLoss' in e).map((e) => e.step), [2, 4]);
    assert.ok((steps[3]!.mainLoss as number) < (steps[0]!.mainLoss as number), 'the loss goes down');
    for (const e of steps) assert.ok((e.mfu as number) > 0 && (e.tokensPerSec as number) > 0 && e.tokens === 128);
    const svg = readFileSync(join(dir, 'a', 'loss.svg'), 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal((svg.match(/<polyline/g) ?? []).length, 2);

    const g = await seekd(['generate', '--model', join(dir, 'a'), '--ids', '0,5,17', '--max-tokens', '4', '--json']);
    assert.equal(g.code, 0, g.stderr);
    assert.equal((JSON.parse(g.stdout) as { ids: number[] }).ids.length, 4);

    const b1 = await seekd(['train', ...common(), '--out', join(dir, 'b'), '--pp', '2', '--schedule', 'dualpipe', '--until', '2', '--no-progress']);
    assert.equal(b1.code, 0, b1.stderr);
    assert.equal(b1.stderr, '');
    const again = await seekd(['train', ...common(), '--out', join(dir, 'b')]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /--resume/);
    const b2 = await seekd(['train', '--out', join(dir, 'b'), '--resume', '--no-progress']);
    assert.equal(b2.code, 0, b2.stderr);
    const lb = log('b');
    const strip = (l: Array<Record<string, unknown>>) => l.map((e) => [e.step, e.loss, e.mainLoss, e.gradNorm, e.evalLoss]);
    assert.deepEqual(strip(lb), strip(la));
    assert.ok(lb.filter((e) => 'mainLoss' in e).every((e) => typeof (e.bubble as { makespanMs: number }).makespanMs === 'number'));
    assert.ok(readFileSync(join(dir, 'b', 'model.safetensors')).equals(readFileSync(join(dir, 'a', 'model.safetensors'))));
  });

  it('a {"model", "train"} recipe file: its options, flags over them; --fp8', async () => {
    writeFileSync(join(dir, 'recipe.json'), JSON.stringify({ model: CONFIG, train: { steps: 1, seqLen: 8, microBatch: 1, chunks: 2, evalWindows: 0 } }));
    const r = await seekd(['train', '--config', join(dir, 'recipe.json'), '--data', join(dir, 'data'), '--out', join(dir, 'r'), '--steps', '2', '--fp8', '--json', '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    const steps = log('r').filter((e) => 'mainLoss' in e);
    assert.deepEqual(steps.map((e) => [e.step, e.tokens]), [[1, 16], [2, 16]]);
    assert.equal((JSON.parse(r.stdout) as { evalLoss: number | null }).evalLoss, null);
    const state = JSON.parse(readFileSync(join(dir, 'r', 'trainer', 'state.json'), 'utf8')) as { extra: { run: { fp8: boolean; steps: number; chunks: number } } };
    assert.deepEqual([state.extra.run.fp8, state.extra.run.steps, state.extra.run.chunks], [true, 2, 2]);
  });

  it('refuses bad options with exit code 2', async () => {
    const r = await seekd(['train', ...common(), '--out', join(dir, 'c'), '--pp', '2', '--schedule', 'dualpipe', '--chunks', '3']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /chunks/);
  });
});
