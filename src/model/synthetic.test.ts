// Synthetic checkpoints: round trip through seekd's own loader and model, the published names/shapes/
// dtypes of the presets (sparse zeros), FP8 scale partners, determinism, value scales, shard splitting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBackend } from '../kernels/index.ts';
import { Checkpoint, INDEX_FILE } from '../weights/checkpoint.ts';
import { fp8Pair } from '../weights/pairing.ts';
import { decodeBf16, FP8_E4M3_TABLE } from '../tensor/dtypes.ts';
import { DeepseekModel } from './deepseek.ts';
import { presetConfig, presetStorage } from './presets.ts';
import { assignShards, planCheckpoint, shardFileName, SyntheticCheckpointError, writeSyntheticCheckpoint } from './synthetic.ts';

/** A small DeepSeek-V3-shaped config: q_lora, one dense layer, MoE with noaux_tc and a shared expert, one MTP layer; widths off the 128 grid so FP8 blocks are partial. */
const SMALL = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 512, hidden_size: 256,
  intermediate_size: 384, moe_intermediate_size: 130, num_hidden_layers: 2, first_k_dense_replace: 1, moe_layer_freq: 1,
  num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 192, kv_lora_rank: 160, qk_nope_head_dim: 32,
  qk_rope_head_dim: 16, v_head_dim: 32, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2, n_group: 2,
  topk_group: 1, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, routed_scaling_factor: 2.5,
  rms_norm_eps: 1e-6, rope_theta: 10000, rope_scaling: null, max_position_embeddings: 1024, num_nextn_predict_layers: 1,
  tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1, torch_dtype: 'bfloat16',
};

const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `seekd-synth-${tag}-`));

function indexOf(dir: string): { metadata: { total_size: number }; weight_map: Record<string, string> } {
  return JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'));
}

async function lastLogits(dir: string): Promise<Float32Array> {
  const kernels = await loadBackend('ref');
  const model = await DeepseekModel.load(dir, kernels);
  try {
    const tokens = Int32Array.of(3, 17, 250, 8);
    return model.forward({ tokens, seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: tokens.length }] }, model.createCache(1)).slice();
  } finally {
    model.close();
    await kernels.dispose();
  }
}

function std(v: ArrayLike<number>): number {
  let s = 0, ss = 0;
  for (let i = 0; i < v.length; i++) { s += v[i]!; ss += v[i]! * v[i]!; }
  const m = s / v.length;
  return Math.sqrt(ss / v.length - m * m);
}

for (const dtype of ['bf16', 'fp8'] as const) {
  test(`random ${dtype} checkpoint of a small config loads through Checkpoint and DeepseekModel (ref): finite, non-trivial logits`, async () => {
    const dir = tmp(dtype);
    try {
      const s = writeSyntheticCheckpoint(dir, SMALL, { dtype, shards: 3, seed: 7 });
      assert.deepEqual(s.files.slice(0, 4), [shardFileName(0, 3), shardFileName(1, 3), shardFileName(2, 3), INDEX_FILE]);
      assert.equal(shardFileName(1, 3), 'model-00002-of-00003.safetensors');
      const ck = Checkpoint.open(dir);
      try {
        const idx = indexOf(dir);
        let sum = 0;
        for (const [name, file] of Object.entries(idx.weight_map)) {
          const info = ck.info(name);
          assert.ok(info.file.endsWith(file), name);
          sum += info.byteLength;
        }
        assert.equal(idx.metadata.total_size, sum);
        assert.equal(ck.tensors.size, Object.keys(idx.weight_map).length);
        assert.equal(s.dataBytes, sum);
        const fileSum = s.files.slice(0, 3).reduce((a, f) => a + statSync(join(dir, f)).size, 0);
        assert.equal(s.fileBytes, fileSum);
        // Value scales: a linear weight ~ N(0, 1/fan_in), norms ~ 1, the embedding ~ N(0, 1).
        const q = 'model.layers.1.self_attn.q_b_proj.weight';
        let w: Float32Array;
        if (dtype === 'fp8') {
          const pair = fp8Pair(ck, q);
          assert.deepEqual(pair.scale.shape, [1, 2]); // [ceil(96/128), ceil(192/128)]
          const codes = ck.readBytes(q);
          assert.ok(!codes.includes(0x7f) && !codes.includes(0xff), 'no NaN codes');
          const sc = new Float32Array(ck.readBytes(pair.scale.name).slice().buffer);
          w = Float32Array.from(codes, (c, i) => FP8_E4M3_TABLE[c]! * sc[Math.floor(i % 192 / 128)]!);
        } else {
          assert.equal(ck.info(q).dtype, 'BF16');
          w = decodeBf16(new Uint16Array(ck.readBytes(q).slice().buffer));
        }
        assert.ok(Math.abs(std(w) * Math.sqrt(192) - 1) < 0.15, `std·sqrt(fan_in) = ${std(w) * Math.sqrt(192)}`);
        const norm = decodeBf16(new Uint16Array(ck.readBytes('model.layers.0.input_layernorm.weight').slice().buffer));
        assert.ok(Math.abs(norm.reduce((a, b) => a + b, 0) / norm.length - 1) < 0.05);
        const emb = decodeBf16(new Uint16Array(ck.readBytes('model.embed_tokens.weight').slice().buffer));
        assert.ok(Math.abs(std(emb) - 1) < 0.05, `embedding std ${std(emb)}`);
        assert.equal(ck.info('model.layers.1.mlp.gate.e_score_correction_bias').dtype, 'F32');
      } finally {
        ck.close();
      }
      const logits = await lastLogits(dir);
      assert.equal(logits.length, SMALL.vocab_size);
      assert.ok(logits.every(Number.isFinite));
      assert.ok(std(logits) > 1e-3, 'logits are not all equal');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('random fill is deterministic for a seed, differs across seeds, and does not depend on the shard layout', () => {
  const dirs = [tmp('a'), tmp('b'), tmp('c'), tmp('d')];
  try {
    writeSyntheticCheckpoint(dirs[0]!, SMALL, { dtype: 'fp8', shards: 2, seed: 1 });
    writeSyntheticCheckpoint(dirs[1]!, SMALL, { dtype: 'fp8', shards: 2, seed: 1 });
    writeSyntheticCheckpoint(dirs[2]!, SMALL, { dtype: 'fp8', shards: 2, seed: 2 });
    writeSyntheticCheckpoint(dirs[3]!, SMALL, { dtype: 'fp8', shards: 5, seed: 1 });
    for (const f of [shardFileName(0, 2), shardFileName(1, 2)]) {
      assert.ok(readFileSync(join(dirs[0]!, f)).equals(readFileSync(join(dirs[1]!, f))), `${f}: same seed, same bytes`);
      assert.ok(!readFileSync(join(dirs[0]!, f)).equals(readFileSync(join(dirs[2]!, f))), `${f}: another seed, other bytes`);
    }
    const [a, b, c] = [Checkpoint.open(dirs[0]!), Checkpoint.open(dirs[3]!), Checkpoint.open(dirs[2]!)];
    try {
      for (const name of a.tensors.keys()) assert.ok(Buffer.from(a.readBytes(name)).equals(Buffer.from(b.readBytes(name))), name);
      // Every tensor differs across seeds (none is left at a seed-independent value).
      let same = 0;
      for (const name of a.tensors.keys()) if (Buffer.from(a.readBytes(name)).equals(Buffer.from(c.readBytes(name)))) same++;
      assert.equal(same, 0);
    } finally {
      a.close(); b.close(); c.close();
    }
  } finally {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});

test('v2-lite preset, zeros: 4 sparse shards with the published names, shapes and dtypes, instantly', () => {
  const dir = tmp('v2lite');
  try {
    const t0 = performance.now();
    const s = writeSyntheticCheckpoint(dir, presetConfig('v2-lite'), { fill: 'zeros', shards: 4, dtype: presetStorage('v2-lite').dtype });
    const ms = performance.now() - t0;
    assert.ok(ms < 5000, `${ms} ms`);
    assert.deepEqual(s.files, ['model-00001-of-00004.safetensors', 'model-00002-of-00004.safetensors', 'model-00003-of-00004.safetensors', 'model-00004-of-00004.safetensors', INDEX_FILE, 'config.json']);
    const idx = indexOf(dir);
    const ck = Checkpoint.open(dir);
    try {
      const expect = (name: string, dtype: string, shape: number[]) => {
        const t = ck.info(name);
        assert.equal(t.dtype, dtype, name);
        assert.deepEqual(t.shape, shape, name);
      };
      expect('model.layers.1.mlp.experts.63.down_proj.weight', 'BF16', [2048, 1408]);
      expect('model.layers.1.mlp.experts.0.gate_proj.weight', 'BF16', [1408, 2048]);
      expect('model.layers.0.mlp.gate_proj.weight', 'BF16', [10944, 2048]);
      expect('model.layers.26.self_attn.q_proj.weight', 'BF16', [16 * 192, 2048]);
      expect('model.layers.26.self_attn.kv_a_proj_with_mqa.weight', 'BF16', [576, 2048]);
      expect('model.layers.26.self_attn.kv_b_proj.weight', 'BF16', [16 * 256, 512]);
      expect('model.layers.26.mlp.shared_experts.down_proj.weight', 'BF16', [2048, 2816]);
      expect('model.layers.26.mlp.gate.weight', 'BF16', [64, 2048]);
      expect('model.embed_tokens.weight', 'BF16', [102400, 2048]);
      expect('lm_head.weight', 'BF16', [102400, 2048]);
      assert.ok(!ck.has('model.layers.27.eh_proj.weight'), 'V2-Lite has no MTP layer');
      assert.ok(!ck.has('model.layers.1.mlp.gate.e_score_correction_bias'), 'greedy routing has no correction bias');
      assert.ok(![...ck.tensors.keys()].some((n) => n.endsWith('_scale_inv')));
      let sum = 0;
      for (const t of ck.tensors.values()) sum += t.byteLength;
      assert.equal(idx.metadata.total_size, sum);
      assert.equal(sum, s.dataBytes);
      assert.equal(ck.tensors.size, 5291);
      // Zeros read back as zeros (a slice from the middle of a shard).
      assert.ok(ck.readBytes('model.layers.13.mlp.experts.5.up_proj.weight').every((b) => b === 0));
    } finally {
      ck.close();
    }
    const shards = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
    const apparent = shards.reduce((a, f) => a + statSync(join(dir, f)).size, 0);
    const allocated = shards.reduce((a, f) => a + statSync(join(dir, f)).blocks * 512, 0);
    assert.ok(apparent > 31e9, `apparent size ${apparent}`);
    assert.ok(allocated < 4e6, `sparse: ${allocated} bytes allocated for ${apparent}`);
    // The shards are about equal (the largest tensor, 0.42 GB, bounds the imbalance).
    const sizes = shards.map((f) => statSync(join(dir, f)).size);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) < 0.5e9, JSON.stringify(sizes));
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), presetConfig('v2-lite'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('v3 preset, 4 layers, zeros: FP8 where DeepSeek quantizes, each with its scale_inv partner; bf16 override drops them', () => {
  const dir = tmp('v3');
  try {
    writeSyntheticCheckpoint(dir, presetConfig('v3'), { fill: 'zeros', layers: 4, shards: 6 });
    const written = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.equal(written.num_hidden_layers, 4);
    assert.deepEqual(written.quantization_config, presetConfig('v3').quantization_config);
    const ck = Checkpoint.open(dir);
    try {
      const names = [...ck.tensors.keys()];
      const order = Object.keys(indexOf(dir).weight_map);
      assert.equal(order.length, names.length);
      let fp8 = 0;
      for (const name of names) {
        const t = ck.info(name);
        if (t.dtype === 'F8_E4M3') {
          fp8++;
          const pair = fp8Pair(ck, name); // validates F32 and [ceil(rows/128), ceil(cols/128)]
          assert.deepEqual(pair.scale.shape, [Math.ceil(t.shape[0]! / 128), Math.ceil(t.shape[1]! / 128)]);
          assert.equal(order.indexOf(pair.scale.name), order.indexOf(name) + 1, 'scale right after its weight');
        }
      }
      assert.equal(fp8, names.filter((n) => n.endsWith('_scale_inv')).length);
      const dt = (n: string) => ck.info(n).dtype;
      assert.equal(dt('model.layers.0.self_attn.q_a_proj.weight'), 'F8_E4M3');
      assert.equal(dt('model.layers.0.mlp.down_proj.weight'), 'F8_E4M3');
      assert.equal(dt('model.layers.3.mlp.experts.255.down_proj.weight'), 'F8_E4M3');
      assert.deepEqual(ck.info('model.layers.3.mlp.experts.255.down_proj.weight_scale_inv').shape, [56, 16]);
      assert.equal(dt('model.layers.3.mlp.shared_experts.up_proj.weight'), 'F8_E4M3');
      assert.equal(dt('model.layers.4.self_attn.kv_b_proj.weight'), 'F8_E4M3'); // the MTP block
      for (const n of ['model.embed_tokens.weight', 'lm_head.weight', 'model.norm.weight', 'model.layers.3.mlp.gate.weight',
        'model.layers.4.eh_proj.weight', 'model.layers.4.embed_tokens.weight', 'model.layers.4.shared_head.head.weight',
        'model.layers.3.self_attn.kv_a_layernorm.weight']) {
        assert.equal(dt(n), 'BF16', n);
        assert.ok(!ck.has(`${n}_scale_inv`), n);
      }
      assert.equal(dt('model.layers.3.mlp.gate.e_score_correction_bias'), 'F32');
      assert.deepEqual(ck.info('model.layers.4.eh_proj.weight').shape, [7168, 14336]);
      assert.ok(!ck.has('model.layers.5.enorm.weight'));
    } finally {
      ck.close();
    }
    const bf = planCheckpoint(presetConfig('v3'), { layers: 4, dtype: 'bf16', mtp: false });
    assert.ok(!('quantization_config' in bf.configJson));
    assert.equal(bf.configJson.num_nextn_predict_layers, 0);
    assert.ok(bf.tensors.every((t) => t.dtype === 'BF16' || t.name.endsWith('e_score_correction_bias')));
    assert.ok(!bf.tensors.some((t) => t.name.startsWith('model.layers.4.')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('assignShards: in order, every shard non-empty, about equal bytes; too many shards is an error', () => {
  const sizes = Array.from({ length: 100 }, (_, i) => 1 + (i % 7));
  for (const n of [1, 2, 3, 10, 100]) {
    const s = assignShards(sizes, n);
    for (let i = 1; i < s.length; i++) assert.ok(s[i]! === s[i - 1]! || s[i]! === s[i - 1]! + 1);
    assert.equal(s[0], 0);
    assert.equal(s.at(-1), n - 1);
    const bytes = new Array<number>(n).fill(0);
    sizes.forEach((b, i) => (bytes[s[i]!]! += b));
    const target = sizes.reduce((a, b) => a + b, 0) / n;
    if (n <= 10) assert.ok(bytes.every((b) => Math.abs(b - target) <= 7), JSON.stringify(bytes));
  }
  // One huge tensor first: the later shards still each get one.
  assert.deepEqual(assignShards([1000, 1, 1, 1], 3), [0, 1, 2, 2]);
  assert.throws(() => assignShards([1, 2], 3), SyntheticCheckpointError);
  assert.throws(() => assignShards([1, 2], 0), SyntheticCheckpointError);
});

test('refuses a non-empty output directory unless force; force replaces the old shards', () => {
  const dir = tmp('force');
  try {
    writeFileSync(join(dir, 'notes.txt'), 'keep me');
    assert.throws(() => writeSyntheticCheckpoint(dir, SMALL, { fill: 'zeros', shards: 3 }), /not empty/);
    writeSyntheticCheckpoint(dir, SMALL, { fill: 'zeros', shards: 3, force: true });
    writeSyntheticCheckpoint(dir, SMALL, { fill: 'zeros', shards: 2, force: true });
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', INDEX_FILE, shardFileName(0, 2), shardFileName(1, 2), 'notes.txt'].sort());
    assert.throws(() => writeSyntheticCheckpoint(dir, { ...SMALL, hidden_size: 0 }, { force: true }), SyntheticCheckpointError);
    assert.throws(() => writeSyntheticCheckpoint(dir, SMALL, { force: true, files: { '../x': 'y' } }), SyntheticCheckpointError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('random fill throughput (MB/s, reported)', (t) => {
  const dir = tmp('speed');
  try {
    // Real widths (V2-Lite), one layer: about 1.1 GB of BF16.
    const s = writeSyntheticCheckpoint(dir, presetConfig('v2-lite'), { layers: 1, shards: 2, seed: 3 });
    assert.equal(s.fileBytes, readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((a, f) => a + statSync(join(dir, f)).size, 0));
    t.diagnostic(`random fill: ${(s.fileBytes / 1e6).toFixed(0)} MB in ${s.seconds.toFixed(2)} s = ${s.mbPerSec.toFixed(0)} MB/s`);
    assert.ok(s.mbPerSec > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
