// A training run's full state on disk, for resuming bit for bit: the parameters as a Hugging Face
// checkpoint in F32 (exact; `seekd serve --model DIR` loads the same directory) plus, under trainer/,
// the AdamW moments (optimizer.safetensors: `<param name>.exp_avg` / `.exp_avg_sq`, F32 (BF16 for a run
// whose moments are stored in BF16, optim.ts `moments`), routed experts
// stacked [E, out, in] under `mlp.experts.{E}.*`) and state.json (step, AdamW hyper-parameters, and
// whatever the trainer adds: data position, schedule, ...). The router's correction bias is part of the
// checkpoint (F32). Kept out of the model directory's top level, whose *.safetensors the loader reads.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32ToBf16 } from '../tensor/dtypes.ts';
import { SafetensorsFile } from '../weights/safetensors.ts';
import { writeSafetensors, type TensorToWrite } from '../weights/writer.ts';
import type { DeepseekConfig } from '../model/config.ts';
import { writeTrainCheckpoint } from './checkpoint.ts';
import { AdamW, type AdamWOptions } from './optim.ts';
import { loadTrainParams, namedParams, type TrainParams } from './params.ts';

export const TRAINER_DIR = 'trainer';

interface StateJson {
  step: number;
  /** `moments` only on runs that store them in BF16 (absent: the parameters' type, as before). */
  adamw: { beta1: number; beta2: number; eps: number; weightDecay: number; moments?: 'bf16' };
  extra: Record<string, unknown>;
}

export class TrainStateError extends Error {
  override name = 'TrainStateError';
  readonly exitCode = 2;
}

/** Writes `dir` (config.json, model.safetensors in F32, trainer/): everything resume needs. */
export function saveTrainState(dir: string, configJson: Record<string, unknown>, c: DeepseekConfig, params: TrainParams, opt: AdamW,
  extra: Record<string, unknown> = {}, files: Record<string, string | Uint8Array> = {}): void {
  writeTrainCheckpoint(dir, configJson, c, params, { dtype: 'f32', files });
  const named = namedParams(c, params).filter((n) => n.tensor.requiresGrad);
  if (named.length !== opt.params.length || named.some((n, i) => n.tensor !== opt.params[i])) {
    throw new TrainStateError('the optimizer does not hold exactly the trainable parameters in name-table order (trainableTensors)');
  }
  const tensors: TensorToWrite[] = [];
  named.forEach((n, i) => {
    const shape = [...n.tensor.shape];
    for (const [suffix, x] of [['exp_avg', opt.state.m[i]!], ['exp_avg_sq', opt.state.v[i]!]] as const) {
      // BF16 moments (FP8 runs) hold BF16 values: written as BF16, exactly, half the bytes.
      tensors.push(opt.moments === 'bf16'
        ? { name: `${n.name}.${suffix}`, dtype: 'BF16', shape, data: Uint16Array.from(x, f32ToBf16) }
        : { name: `${n.name}.${suffix}`, dtype: 'F32', shape, data: Float32Array.from(x) });
    }
  });
  mkdirSync(join(dir, TRAINER_DIR), { recursive: true });
  writeSafetensors(join(dir, TRAINER_DIR, 'optimizer.safetensors'), tensors, { format: 'seekd-adamw' });
  const adamw: StateJson['adamw'] = { beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps, weightDecay: opt.weightDecay };
  if (opt.moments) adamw.moments = opt.moments;
  const state: StateJson = { step: opt.state.step, adamw, extra };
  writeFileSync(join(dir, TRAINER_DIR, 'state.json'), JSON.stringify(state, null, 2) + '\n');
}

/**
 * Reads a directory written by saveTrainState: f32 parameters, an AdamW over trainableTensors with its
 * moments and step restored (hyper-parameters from state.json; `decays` as given, default matrices),
 * and the trainer's extra fields.
 */
export function loadTrainState(dir: string, opts: Pick<AdamWOptions, 'decays'> = {}): { config: DeepseekConfig; params: TrainParams; opt: AdamW; extra: Record<string, unknown> } {
  let state: StateJson;
  try {
    state = JSON.parse(readFileSync(join(dir, TRAINER_DIR, 'state.json'), 'utf8')) as StateJson;
  } catch (e) {
    throw new TrainStateError(`${join(dir, TRAINER_DIR, 'state.json')}: ${(e as Error).message}`);
  }
  if (!Number.isSafeInteger(state.step) || state.step < 0 || typeof state.adamw?.beta1 !== 'number') throw new TrainStateError(`${dir}: state.json is not a trainer state`);
  if (state.adamw.moments !== undefined && state.adamw.moments !== 'bf16') throw new TrainStateError(`${dir}: unknown AdamW moment storage ${JSON.stringify(state.adamw.moments)}`);
  const { config, params } = loadTrainParams(dir, Float32Array);
  const named = namedParams(config, params).filter((n) => n.tensor.requiresGrad);
  const opt = new AdamW(named.map((n) => n.tensor), { ...state.adamw, ...opts });
  const f = SafetensorsFile.open(join(dir, TRAINER_DIR, 'optimizer.safetensors'));
  try {
    named.forEach((n, i) => {
      for (const [suffix, dst] of [['exp_avg', opt.state.m[i]!], ['exp_avg_sq', opt.state.v[i]!]] as const) {
        const name = `${n.name}.${suffix}`;
        if (!f.tensors.has(name)) throw new TrainStateError(`${dir}: optimizer state has no ${name}`);
        const src = f.readF32(name);
        if (src.length !== dst.length) throw new TrainStateError(`${name}: ${src.length} values, the parameter has ${dst.length}`);
        dst.set(src);
      }
    });
  } finally {
    f.close();
  }
  opt.state.step = state.step;
  return { config, params, opt, extra: state.extra ?? {} };
}
