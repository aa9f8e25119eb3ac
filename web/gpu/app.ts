/// <reference lib="dom" />
// The in-page model runner: the whole GPU forward in the browser tab (src/model/gpu/forward.ts on
// navigator.gpu), a model loaded from a URL or from a local folder, a progress bar while it loads, and
// greedy or seeded sampling over token ids (src/model/forward-model.ts generateAsync, the loop of
// `seekd generate`). Bundled by src/server/gpu-page.ts (served by `seekd serve` at /gpu/; web/gpu/build.ts writes static
// files). Query parameters: ?model=URL (a model directory, ending in '/'), ids=1,2,3, max=16,
// temperature=0, seed=0, autorun=1 (load and generate at once), report=PATH (POST the result as JSON;
// used by the browser test).
import { generateAsync } from '../../src/model/forward-model.ts';
import type { GpuDeepseekModel } from '../../src/model/gpu/forward.ts';
import { fetchModelFiles, loadGpuModelFromFiles, type LoadProgress } from '../../src/model/gpu/load-bytes.ts';
import { getDevice } from '../../src/kernels/webgpu/device.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface Loaded { name: string; model: GpuDeepseekModel; vocab: number }
let loaded: Loaded | null = null;

function setProgress(label: string, done: number, total: number): void {
  const bar = $<HTMLProgressElement>('progress');
  bar.max = Math.max(1, total);
  bar.value = Math.min(done, total);
  $('status').textContent = `${label} ${total > 0 ? Math.round((100 * done) / total) : 0}%`;
}

function onLoadProgress(p: LoadProgress): void {
  setProgress(p.phase === 'weights' ? 'reading weights' : 'uploading to the GPU', p.done, p.total);
}

async function loadFromUrl(base: string): Promise<Loaded> {
  const url = new URL(base, location.href).toString();
  const files = await fetchModelFiles(url.endsWith('/') ? url : `${url}/`, (d, t) => setProgress('downloading', d, t));
  return finishLoad(url, files);
}

async function loadFromFolder(list: FileList): Promise<Loaded> {
  const files = new Map<string, Uint8Array>();
  let total = 0, done = 0;
  for (const f of Array.from(list)) total += f.size;
  for (const f of Array.from(list)) {
    const name = f.name;
    if (name !== 'config.json' && !name.endsWith('.safetensors') && name !== 'model.safetensors.index.json') continue;
    files.set(name, new Uint8Array(await f.arrayBuffer()));
    done += f.size;
    setProgress('reading files', done, total);
  }
  const first = list[0] as (File & { webkitRelativePath?: string }) | undefined;
  return finishLoad(first?.webkitRelativePath?.split('/')[0] || 'local folder', files);
}

async function finishLoad(name: string, files: Map<string, Uint8Array>): Promise<Loaded> {
  loaded?.model.close();
  loaded = null;
  const { config, model } = await loadGpuModelFromFiles(name, files, onLoadProgress);
  loaded = { name, model, vocab: config.vocab_size };
  const ctx = await getDevice();
  $('status').textContent = `loaded ${name}: ${config.model_type}, ${config.num_hidden_layers} layers, vocab ${config.vocab_size} on ${ctx.adapterDescription || ctx.platform}`;
  return loaded;
}

function parseIds(s: string): number[] {
  const ids = s.split(',').map((t) => t.trim()).filter((t) => t !== '').map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isSafeInteger(n) || n < 0)) throw new Error(`token ids must be a comma-separated list of integers, got '${s}'`);
  return ids;
}

async function run(): Promise<{ ids: number[]; logits: number[][]; ms: number }> {
  if (!loaded) throw new Error('load a model first');
  const prompt = parseIds($<HTMLInputElement>('ids').value);
  const bad = prompt.find((id) => id >= loaded!.vocab);
  if (bad !== undefined) throw new Error(`token id ${bad} is outside the vocabulary [0, ${loaded.vocab})`);
  const maxTokens = Number($<HTMLInputElement>('max').value);
  const temperature = Number($<HTMLInputElement>('temperature').value);
  const seed = Number($<HTMLInputElement>('seed').value);
  const t0 = performance.now();
  const r = await generateAsync(loaded.model, prompt, { maxTokens, temperature, seed });
  const ms = performance.now() - t0;
  $('output').textContent = `${r.ids.join(',')}\n(${r.ids.length} tokens in ${(ms / 1000).toFixed(2)} s)`;
  return { ids: r.ids, logits: r.logits.map((l) => Array.from(l)), ms };
}

function guard(f: () => Promise<unknown>): () => void {
  return () => {
    f().catch((e: unknown) => { $('status').textContent = `error: ${(e as Error).message}`; });
  };
}

async function main(): Promise<void> {
  const q = new URLSearchParams(location.search);
  for (const k of ['ids', 'max', 'temperature', 'seed']) {
    const v = q.get(k);
    if (v !== null) $<HTMLInputElement>(k).value = v;
  }
  $<HTMLInputElement>('model').value = q.get('model') ?? $<HTMLInputElement>('model').value;
  if (!('gpu' in navigator)) $('status').textContent = 'this browser has no WebGPU (navigator.gpu): the in-page model needs it';
  $('load').addEventListener('click', guard(() => loadFromUrl($<HTMLInputElement>('model').value)));
  $('folder').addEventListener('change', guard(() => loadFromFolder($<HTMLInputElement>('folder').files!)));
  $('generate').addEventListener('click', guard(run));
  if (q.get('autorun') !== '1') return;
  const report = q.get('report');
  let result: Record<string, unknown>;
  try {
    const events: string[] = [];
    const bar = $<HTMLProgressElement>('progress');
    const seen = new MutationObserver(() => events.push($('status').textContent ?? ''));
    seen.observe($('status'), { childList: true, characterData: true, subtree: true });
    await loadFromUrl($<HTMLInputElement>('model').value);
    const r = await run();
    seen.disconnect();
    const ctx = await getDevice();
    result = { ...r, platform: ctx.platform, adapter: ctx.adapterDescription, progressEvents: events.length, progressMax: bar.max };
  } catch (e) {
    result = { error: `${(e as Error).name}: ${(e as Error).message}\n${(e as Error).stack ?? ''}` };
  }
  if (report) await fetch(report, { method: 'POST', body: JSON.stringify(result) });
}

void main();
