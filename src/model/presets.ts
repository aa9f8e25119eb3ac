// Published config.json files of real DeepSeek-V2/V3-architecture checkpoints, kept byte-for-byte in
// `presets/` so that the parser, the parameter counter and shape planning can be checked against the
// configs people actually download, without a model hub. Sources: the Hugging Face repositories
// named in PRESET_INFO (the text was cross-checked against verbatim copies quoted in public code).
import { readFileSync } from 'node:fs';

/** Preset names (file `presets/<name>.json`). */
export const PRESETS = ['v2-lite', 'coder-v2-lite', 'moonlight', 'v3', 'r1', 'v3.1', 'kimi-k2'] as const;
export type PresetName = (typeof PRESETS)[number];

/** A config.json parsed as plain JSON (unvalidated: hand it to parseConfig). */
export type RawJson = Record<string, unknown>;

/** How the published checkpoint stores its weights. */
export type PresetStorage =
  /** Every tensor in bfloat16. */
  | { dtype: 'bf16' }
  /** Linear weights in float8_e4m3fn, each with a float32 `weight_scale_inv` per 128x128 block; norms, embeddings, lm_head and router in bf16/f32. */
  | { dtype: 'fp8'; blockSize: [128, 128] };

export interface PresetInfo {
  /** Hugging Face repository the config.json was published in. */
  repo: string;
  /** `model-000NN-of-0000M.safetensors` shard count M of that repository. */
  shards: number;
  storage: PresetStorage;
}

const BF16: PresetStorage = { dtype: 'bf16' };
const FP8: PresetStorage = { dtype: 'fp8', blockSize: [128, 128] };

// Shard counts are the M of the repositories' `model-000NN-of-0000M.safetensors` names as listed in
// their model.safetensors.index.json; the 163 of V3 is also visible in vLLM load logs
// ("Loading safetensors checkpoint shards: 0/163", quoted in a public vllm-ascend issue). The storage
// dtype follows each config.json: a quantization_config with quant_method fp8 and weight_block_size
// [128, 128] means FP8 weights with 128x128 weight_scale_inv blocks; no quantization_config means the
// torch_dtype (bfloat16).
export const PRESET_INFO: Readonly<Record<PresetName, PresetInfo>> = {
  'v2-lite': { repo: 'deepseek-ai/DeepSeek-V2-Lite', shards: 4, storage: BF16 },
  'coder-v2-lite': { repo: 'deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct', shards: 4, storage: BF16 },
  moonlight: { repo: 'moonshotai/Moonlight-16B-A3B-Instruct', shards: 27, storage: BF16 },
  v3: { repo: 'deepseek-ai/DeepSeek-V3', shards: 163, storage: FP8 },
  r1: { repo: 'deepseek-ai/DeepSeek-R1', shards: 163, storage: FP8 },
  'v3.1': { repo: 'deepseek-ai/DeepSeek-V3.1', shards: 163, storage: FP8 },
  'kimi-k2': { repo: 'moonshotai/Kimi-K2-Instruct', shards: 61, storage: FP8 },
};

/** A preset name that is not one of PRESETS. */
export class UnknownPresetError extends Error {
  override name = 'UnknownPresetError';
  readonly exitCode = 2;
  constructor(readonly preset: string) {
    super(`unknown preset ${JSON.stringify(preset)} (known: ${PRESETS.join(', ')})`);
  }
}

export function isPreset(name: string): name is PresetName {
  return (PRESETS as readonly string[]).includes(name);
}

function known(name: string): PresetName {
  if (!isPreset(name)) throw new UnknownPresetError(name);
  return name;
}

/** Absolute path of the preset's config.json. */
export function presetPath(name: string): string {
  return new URL(`./presets/${known(name)}.json`, import.meta.url).pathname;
}

/** The published config.json of a preset, as parsed JSON (a fresh object each call). */
export function presetConfig(name: string): RawJson {
  return JSON.parse(readFileSync(presetPath(name), 'utf8')) as RawJson;
}

/** Shard count of the published checkpoint. */
export function presetShards(name: string): number {
  return PRESET_INFO[known(name)].shards;
}

/** Storage dtype of the published checkpoint. */
export function presetStorage(name: string): PresetStorage {
  return PRESET_INFO[known(name)].storage;
}
