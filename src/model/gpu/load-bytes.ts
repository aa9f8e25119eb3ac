// Loading a model for the GPU forward from bytes rather than a directory: what a browser page does with
// a model fetched from a URL or picked from a local folder (web/app.ts). No node:fs: config.json is
// parsed with the loader's rules (config.ts parseConfig), the safetensors through BytesCheckpoint (same
// header validation as Checkpoint), the weights through weight-map.ts loadWeights into host arrays of the
// `webgpu` kernel backend, then uploaded once (GpuDeepseekModel.fromWeights); or, without WebGPU, into the
// kernels' memory of a CPU backend for the CPU forward (loadCpuModelFromFiles: `wasm`, whose binaries a
// page fetches next to its bundle, or the plain-TypeScript `ref`).
import { loadBackend } from '../../kernels/api.ts';
import '../../kernels/ref/index.ts';
import '../../kernels/wasm/index.ts';
import '../../kernels/webgpu/registry.ts';
import { BytesCheckpoint, INDEX_NAME } from '../../weights/bytes-checkpoint.ts';
import { ConfigError, parseConfig, type DeepseekConfig } from '../config.ts';
import { loadWeights } from '../weight-map.ts';
import { GpuDeepseekModel } from './forward.ts';
import { DeepseekModel } from '../deepseek.ts';
import { weightFootprint } from '../memory-plan.ts';

/** The tokenizer files a model directory may hold (tokenizer.ts ChatTokenizer reads the same). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'] as const;

export interface LoadProgress {
  /** 'fetch' (bytes of the files), 'weights' (tensors read), 'upload' (done when the GPU copy is made). */
  phase: 'fetch' | 'weights' | 'upload';
  done: number;
  total: number;
}

/** config.json of a model directory's files, by the loader's rules. */
function configOf(name: string, files: ReadonlyMap<string, Uint8Array>): DeepseekConfig {
  const cfg = files.get('config.json');
  if (!cfg) throw new ConfigError('', 'the model has no config.json', `${name}/config.json`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(cfg));
  } catch (e) {
    throw new ConfigError('', `config.json is not JSON: ${(e as Error).message}`, `${name}/config.json`);
  }
  return parseConfig(json, `${name}/config.json`);
}

/**
 * The CPU model (synchronous forward) on the `backend` kernels (`ref`: plain TypeScript; `wasm`: SIMD,
 * `threads` participants) from a model directory's files: the page's fallback where there is no WebGPU adapter.
 */
export async function loadCpuModelFromFiles(name: string, files: ReadonlyMap<string, Uint8Array>,
  onProgress?: (p: LoadProgress) => void, backend: 'wasm' | 'ref' = 'ref', threads = 1): Promise<{ config: DeepseekConfig; model: DeepseekModel }> {
  const config = configOf(name, files);
  const ck = new BytesCheckpoint(name, files);
  const kernels = await loadBackend(backend, { threads });
  try {
    // Backends with split memory (wasm: 4 GiB each) make room first, as DeepseekModel.load does.
    await kernels.reserve(weightFootprint(config, ck, { mtp: false }).allocations);
    const weights = loadWeights(ck, kernels, config, { mtp: false, onProgress: (done, total) => onProgress?.({ phase: 'weights', done, total }) });
    return { config, model: await DeepseekModel.fromWeights(config, kernels, weights) };
  } finally {
    ck.close();
  }
}

/** A GPU model from a model directory's files (name -> bytes: config.json, safetensors, optional index). */
export async function loadGpuModelFromFiles(name: string, files: ReadonlyMap<string, Uint8Array>,
  onProgress?: (p: LoadProgress) => void): Promise<{ config: DeepseekConfig; model: GpuDeepseekModel }> {
  const config = configOf(name, files);
  const ck = new BytesCheckpoint(name, files);
  const kernels = await loadBackend('webgpu');
  try {
    const weights = loadWeights(ck, kernels, config, { mtp: false, onProgress: (done, total) => onProgress?.({ phase: 'weights', done, total }) });
    onProgress?.({ phase: 'upload', done: 0, total: 1 });
    const model = await GpuDeepseekModel.fromWeights(config, weights, kernels);
    onProgress?.({ phase: 'upload', done: 1, total: 1 });
    return { config, model };
  } finally {
    ck.close();
  }
}

/**
 * The files of a model directory served at `base` (a URL ending in '/'): config.json, then the index and
 * the shards it lists, else model.safetensors. `onBytes` reports bytes received of those announced.
 */
export async function fetchModelFiles(base: string, onBytes?: (done: number, total: number) => void,
  fetchFn: typeof fetch = fetch): Promise<Map<string, Uint8Array>> {
  const url = (f: string) => new URL(f, base).toString();
  const get = async (f: string, optional = false): Promise<Response | null> => {
    const r = await fetchFn(url(f));
    if (r.ok) return r;
    if (optional && r.status === 404) return null;
    throw new Error(`cannot fetch ${url(f)}: HTTP ${r.status}`);
  };
  const files = new Map<string, Uint8Array>();
  files.set('config.json', new Uint8Array(await (await get('config.json'))!.arrayBuffer()));
  const index = await get(INDEX_NAME, true);
  let shards = ['model.safetensors'];
  if (index) {
    const bytes = new Uint8Array(await index.arrayBuffer());
    files.set(INDEX_NAME, bytes);
    const map = (JSON.parse(new TextDecoder().decode(bytes)) as { weight_map?: Record<string, string> }).weight_map ?? {};
    shards = [...new Set(Object.values(map))].sort();
  }
  // The tokenizer, when the directory has one (the page's chat needs it; token ids work without).
  for (const f of TOKENIZER_FILES) {
    const r = await get(f, true);
    if (r) files.set(f, new Uint8Array(await r.arrayBuffer()));
  }
  const responses = await Promise.all(shards.map((s) => get(s)));
  const total = responses.reduce((a, r) => a + Number(r!.headers.get('content-length') ?? 0), 0);
  let done = 0;
  await Promise.all(responses.map(async (r, i) => {
    const reader = r!.body?.getReader();
    if (!reader) { files.set(shards[i]!, new Uint8Array(await r!.arrayBuffer())); return; }
    const parts: Uint8Array[] = [];
    let n = 0;
    for (;;) {
      const { done: end, value } = await reader.read();
      if (end) break;
      parts.push(value);
      n += value.byteLength;
      done += value.byteLength;
      onBytes?.(done, Math.max(total, done));
    }
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.byteLength; }
    files.set(shards[i]!, out);
  }));
  return files;
}
