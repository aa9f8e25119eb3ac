import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { RANDOM_MODEL_CONFIG, randomModelTensorSpecs, randomModelTensors } from './random-model.ts';

test('random-model weights are deterministic, DeepSeek-V3 names, BF16 with the F32 correction bias', () => {
  const digest = () => {
    const h = createHash('sha256');
    for (const t of randomModelTensors()) { h.update(t.name); h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)); }
    return h.digest('hex');
  };
  assert.equal(digest(), digest());
  const specs = randomModelTensorSpecs();
  const names = new Set(specs.map((s) => s.name));
  assert.ok(names.has('model.layers.0.mlp.down_proj.weight'));
  assert.ok(names.has(`model.layers.${RANDOM_MODEL_CONFIG.num_hidden_layers - 1}.mlp.experts.${RANDOM_MODEL_CONFIG.n_routed_experts - 1}.up_proj.weight`));
  assert.ok(names.has('model.layers.1.mlp.gate.e_score_correction_bias'));
  const bias = randomModelTensors().find((t) => t.name === 'model.layers.1.mlp.gate.e_score_correction_bias')!;
  assert.equal(bias.dtype, 'F32');
});
