// Options shared by the model commands (score, generate, info): parsing of --model, --ids, --attn,
// --backend, --threads into checked values, and loading a model with errors the user can act on.
import { existsSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from './errors.ts';
import { backendNames, loadBackend, type Kernels } from '../kernels/index.ts';
import { UnknownBackendError } from '../kernels/api.ts';
import { ConfigError } from '../model/config.ts';
import { DeepseekModel, type LoadOptions } from '../model/deepseek.ts';
import { SafetensorsError } from '../weights/errors.ts';
import { MemoryPlanError, planForDir, type MemoryPlan } from '../model/memory-plan.ts';
import { checkModelWeights } from '../model/weight-map.ts';
import type { ForwardModel } from '../model/forward-model.ts';
import { GpuDeepseekModel } from '../model/gpu/forward.ts';

export interface ModelCliOptions {
  model: string;
  backend?: string;
  threads?: string;
  attn?: string;
  quantize?: string;
}

/** The fastest registered CPU backend: what every command uses unless --backend says otherwise. */
export function defaultBackend(): string {
  return backendNames().includes('wasm') ? 'wasm' : 'ref';
}

/** The --quantize option's help (model and engine commands alike). */
export const QUANTIZE_HELP = 'quantize BF16/F16/F32 projections to FP8 e4m3 with 128x128 block scales while loading (only: fp8)';

/** Adds --model, --backend, --threads, --quantize (and --attn when `attn`) to a command. */
export function modelOptions(cmd: Command, attn = true): Command {
  cmd.requiredOption('--model <dir>', 'model directory (Hugging Face layout: config.json + safetensors)')
    .option('--backend <name>', `kernel backend (${backendNames().join(', ')}; ref: the plain-TypeScript oracle, for checks)`, defaultBackend())
    .option('--threads <n>', 'worker threads for the backend', '1')
    .option('--quantize <fmt>', QUANTIZE_HELP);
  if (attn) cmd.option('--attn <form>', 'MLA form: absorb (default) or naive', 'absorb');
  return cmd;
}

export function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${v}'`);
  return n;
}

export function nonNegativeInt(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new UsageError(`--${name} must be a non-negative integer, got '${v}'`);
  return n;
}

/** "0,5,17" -> [0, 5, 17]; every entry a non-negative integer. */
export function parseIds(v: string | undefined): number[] {
  if (v === undefined || v.trim() === '') throw new UsageError('--ids must list at least one token id, e.g. --ids 0,5,17');
  return v.split(',').map((s) => {
    const t = s.trim();
    if (!/^\d+$/.test(t) || !Number.isSafeInteger(Number(t))) throw new UsageError(`--ids: '${s}' is not a token id (non-negative integer)`);
    return Number(t);
  });
}

/** --quantize: only DeepSeek's FP8 layout (e4m3, 128x128 block scales) is offered. */
export function parseQuantize(v: string | undefined): 'fp8' | undefined {
  if (v === undefined || v === 'fp8') return v;
  throw new UsageError(`--quantize must be fp8, got '${v}'`);
}

export function parseAttn(v: string | undefined): 'absorb' | 'naive' {
  if (v === undefined || v === 'absorb' || v === 'naive') return v ?? 'absorb';
  throw new UsageError(`--attn must be absorb or naive, got '${v}'`);
}

export function checkModelDir(dir: string): void {
  if (!existsSync(dir)) throw new UsageError(`model directory '${dir}' does not exist`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`--model '${dir}' is not a directory`);
}

export async function openKernels(opts: ModelCliOptions): Promise<Kernels> {
  const threads = positiveInt('threads', opts.threads ?? '1');
  try {
    return await loadBackend(opts.backend ?? defaultBackend(), { threads });
  } catch (e) {
    if (e instanceof UnknownBackendError) throw new UsageError(`unknown --backend '${opts.backend}' (available: ${backendNames().join(', ')})`);
    throw e;
  }
}

/** What one command run will hold: its longest sequence and the most rows one forward computes. */
export interface RunSize { maxModelLen: number; maxBatchTokens: number }

/**
 * Loads the model; config and checkpoint problems become one-line usage errors (exit 2). With `size`,
 * the memory plan is checked first: a model that cannot fit stops before any weight is read
 * (MemoryPlanError, exit 2, with the numbers and the fixes).
 */
export async function openModel(opts: ModelCliOptions, load: LoadOptions = {}, size?: RunSize): Promise<{ model: DeepseekModel; kernels: Kernels }> {
  const quantize = parseQuantize(opts.quantize);
  if (quantize) load = { ...load, quantize };
  checkModelDir(opts.model);
  try {
    // The loader's checks on the headers first (as `seekd info` does): a bad checkpoint gets the same error.
    checkModelWeights(opts.model, { mtp: load.mtp ?? true, routedExperts: load.routedExperts ?? true, quantize: load.quantize });
  } catch (e) {
    if (e instanceof ConfigError || e instanceof SafetensorsError) throw new UsageError(e.message);
    throw e;
  }
  if (size) {
    let plan: MemoryPlan;
    try {
      plan = planForDir(opts.model, {
        ...size, maxNumSeqs: 1, quantize: load.quantize, mtp: load.mtp ?? true, routedExperts: load.routedExperts ?? true,
      });
    } catch (e) {
      if (e instanceof ConfigError || e instanceof SafetensorsError) throw new UsageError(e.message);
      throw e;
    }
    if (!plan.fits) throw new MemoryPlanError(plan);
  }
  const kernels = await openKernels(opts);
  try {
    const model = await DeepseekModel.load(opts.model, kernels, load);
    return { model, kernels };
  } catch (e) {
    await kernels.dispose();
    if (e instanceof ConfigError || e instanceof SafetensorsError) throw new UsageError(e.message);
    throw e;
  }
}

export function checkVocab(ids: readonly number[], vocab: number): void {
  for (const id of ids) if (id >= vocab) throw new UsageError(`--ids: token id ${id} is outside the vocabulary [0, ${vocab})`);
}

/** Float32 logits as plain numbers for JSON (each the exact f32 value). */
export function rowToJson(x: Float32Array): number[] {
  return Array.from(x);
}

/**
 * The model whose forward a command runs: for --backend webgpu the GPU-resident forward (weights uploaded
 * once now; absorbed MLA only), else the loaded model itself. `close` frees what the GPU model holds.
 */
export async function forwardModelFor(model: DeepseekModel, kernels: Kernels, attn: 'absorb' | 'naive'): Promise<{ fwd: ForwardModel<unknown>; close(): void }> {
  if (kernels.backend !== 'webgpu') return { fwd: model, close: () => {} };
  if (attn !== 'absorb') throw new UsageError('--backend webgpu computes absorbed MLA only (--attn naive is a CPU check)');
  const gpu = await GpuDeepseekModel.create(model);
  // The weights live on the GPU now: drop the host model's references to its layers (the rest of the run
  // reads only its config), so their host copies can be collected.
  model.close();
  return { fwd: gpu, close: () => gpu.close() };
}
