// Writes training parameters as a Hugging Face DeepSeek-V2/V3 checkpoint (config.json +
// model.safetensors with the published tensor names), the layout `seekd serve --model DIR` and
// DeepseekModel.load read. Names come from the model's one name table (weight-map.ts tensorSpecs), so
// what is written is exactly what the loader asks for: routed experts are unstacked into
// `mlp.experts.{e}.*`, a tied lm_head is not written, the MTP module's embed_tokens / shared_head.head
// are written only when the parameters have their own (otherwise the loader shares the main ones).
// Storage: F32 (exact; default) or BF16 (round to nearest even, as torch's .to(bfloat16));
// e_score_correction_bias stays F32 (as DeepSeek-V3 ships it).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DeepseekConfig } from '../model/config.ts';
import { tensorSpecs } from '../model/weight-map.ts';
import { encodeBf16 } from '../tensor/dtypes.ts';
import type { Tensor } from '../tensor/autograd/index.ts';
import { writeSafetensors, type TensorToWrite } from '../weights/writer.ts';
import type { TrainParams } from './params.ts';

export interface WriteCheckpointOptions {
  dtype?: 'f32' | 'bf16';
  /** More files for the directory (tokenizer.json, tokenizer_config.json, a model card), name → contents. */
  files?: Record<string, string | Uint8Array>;
}

function at(root: unknown, path: readonly (string | number)[]): unknown {
  let o = root as Record<string | number, unknown> | undefined;
  for (const p of path) o = o?.[p] as Record<string | number, unknown> | undefined;
  return o;
}

/** Writes `dir`/config.json (configJson as given) and `dir`/model.safetensors. Returns the tensor count. */
export function writeTrainCheckpoint(dir: string, configJson: Record<string, unknown>, c: DeepseekConfig, p: TrainParams, opts: WriteCheckpointOptions = {}): number {
  const dtype = opts.dtype ?? 'f32';
  const tensors: TensorToWrite[] = [];
  for (const s of tensorSpecs(c, { mtp: true })) {
    const t = at(p, s.target) as Tensor | undefined;
    if (t === undefined) {
      if (s.optional) continue;
      throw new Error(`${s.name}: no such parameter`);
    }
    const n = s.shape.reduce((a, b) => a * b, 1);
    const part = s.group ? t.data.subarray(s.group.index * n, (s.group.index + 1) * n) : t.data;
    if (part.length !== n) throw new Error(`${s.name}: parameter has ${part.length} values, the config wants ${n}`);
    const bias = s.target[s.target.length - 1] === 'bias';
    tensors.push(dtype === 'bf16' && !bias
      ? { name: s.name, dtype: 'BF16', shape: s.shape, data: encodeBf16(part) }
      : { name: s.name, dtype: 'F32', shape: s.shape, data: Float32Array.from(part) });
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...configJson, torch_dtype: dtype === 'bf16' ? 'bfloat16' : 'float32' }, null, 2) + '\n');
  for (const [f, body] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, f), body);
  return tensors.length;
}
