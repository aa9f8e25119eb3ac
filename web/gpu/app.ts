/// <reference lib="dom" />
// The in-page model runner: the whole engine in the browser tab. The GPU forward (src/model/gpu/forward.ts
// on navigator.gpu; without an adapter, or with ?backend=cpu, the CPU forward on the `wasm` kernels: the
// committed .wasm binaries fetched next to this bundle, relaxed SIMD where the browser validates it, one
// thread; the plain-TypeScript `ref` kernels where wasm cannot run, or with ?backend=ref) over a
// model loaded from a URL or from a local folder (progress bar while it loads);
// with the model's tokenizer files, chat: the chat template, tokenizer, scheduler and sampler of the
// server's engine (src/engine: Llm, Engine, ChatTokenizer) over the WebGPU runner; and token ids greedy or
// seeded (src/model/forward-model.ts generateAsync, the loop of `seekd generate`). Bundled by src/server/gpu-page.ts (served by `seekd serve` at /gpu/; web/gpu/build.ts writes static
// files). Query parameters: ?model=URL (a model directory, ending in '/'), ids=1,2,3, max=16,
// temperature=0, seed=0, chat=TEXT (a user message to answer instead of ids), autorun=1 (load and generate
// at once), report=URL (POST the result as JSON; used by the browser tests), backend=auto|webgpu|cpu|wasm|ref,
// threads=N (wasm; only in a cross-origin isolated page: the pool's workers are module Web Workers running
// pool-worker.js, and the page's thread spins rather than blocks while they compute).
import { generateAsync } from '../../src/model/forward-model.ts';
import { fetchModelFiles, loadCpuModelFromFiles, loadGpuModelFromFiles, TOKENIZER_FILES, type LoadProgress } from '../../src/model/gpu/load-bytes.ts';
import type { ForwardModel } from '../../src/model/forward-model.ts';
import type { DeepseekModel } from '../../src/model/deepseek.ts';
import type { LatentCache } from '../../src/model/latent-cache.ts';
import type { ModelRunner, RunnerBatch } from '../../src/engine/contracts.ts';
import { getDevice } from '../../src/kernels/webgpu/device.ts';
import { defaultSamplingParams } from '../../src/engine/contracts.ts';
import { GpuDeepseekRunner } from '../../src/engine/gpu-runner.ts';
import { Llm } from '../../src/engine/llm.ts';
import { ChatTokenizer } from '../../src/engine/tokenizer.ts';
import { defaultSimdLevel, WasmUnsupportedError, type SimdLevel } from '../../src/kernels/wasm/runtime.ts';
import { WasmPool } from '../../src/kernels/wasm/pool.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface Loaded {
  name: string;
  /** 'webgpu' (the GPU-resident forward), or the CPU forward's kernels: 'wasm' (no WebGPU adapter here) or 'ref'. */
  backend: Backend;
  /** The wasm kernels' SIMD level and threads (backend 'wasm'). */
  simd: SimdLevel | null;
  threads: number;
  fwd: ForwardModel<unknown>;
  close(): void;
  vocab: number;
  llm: Llm | null;
}

/** The engine's runner over the CPU model (the fallback): its own host latent cache, synchronous forwards. */
class CpuRunner implements ModelRunner {
  readonly vocabSize: number;
  private readonly cache: LatentCache;
  constructor(private readonly model: DeepseekModel, readonly numBlocks: number) {
    this.vocabSize = model.config.vocab_size;
    this.cache = model.createCache(numBlocks);
  }
  get maxPositions(): number {
    return this.model.config.max_position_embeddings;
  }
  forward(batch: RunnerBatch): Float32Array {
    const logitRows = batch.seqs.some((s) => s.logitRows !== undefined) ? batch.seqs.map((s) => s.logitRows ?? 1) : undefined;
    return this.model.forward(batch, this.cache, logitRows ? { logitRows } : {});
  }
}

type Backend = 'webgpu' | 'wasm' | 'ref';

/**
 * WebGPU unless asked for the CPU (?backend=cpu, or wasm/ref by name) or the browser has no adapter;
 * 'cpu' is the wasm kernels ('ref' where loadCpuModel finds that wasm cannot run here).
 */
async function chooseBackend(): Promise<Backend> {
  const want = new URLSearchParams(location.search).get('backend') ?? 'auto';
  if (!['auto', 'webgpu', 'cpu', 'wasm', 'ref'].includes(want)) throw new Error(`backend must be auto, webgpu, cpu, wasm or ref, not '${want}'`);
  if (want === 'cpu' || want === 'wasm' || want === 'ref') return want === 'ref' ? 'ref' : 'wasm';
  const gpu = (navigator as { gpu?: GPU }).gpu;
  let ok = false;
  try {
    ok = !!gpu && (await gpu.requestAdapter()) !== null;
  } catch {
    ok = false;
  }
  if (!ok && want === 'webgpu') throw new Error('this browser has no WebGPU adapter (navigator.gpu)');
  return ok ? 'webgpu' : 'wasm';
}

/**
 * The wasm kernels' threads: ?threads=N, else up to 4 of the cores; workers share the memory only in a
 * cross-origin isolated page (seekd serve sends COOP/COEP for /gpu/), elsewhere one thread.
 */
function wasmThreads(): number {
  if (!(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated) return 1;
  const want = new URLSearchParams(location.search).get('threads');
  if (want !== null) {
    const n = Number(want);
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error(`threads must be an integer in [1, 64], not '${want}'`);
    return n;
  }
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

/** The CPU model on `backend`; wasm falls back to ref where this browser cannot run it (unless asked for by name). */
async function loadCpuModel(name: string, files: Map<string, Uint8Array>, backend: 'wasm' | 'ref'): Promise<Awaited<ReturnType<typeof loadCpuModelFromFiles>> & { backend: 'wasm' | 'ref' }> {
  if (backend === 'wasm') {
    try {
      return { ...await loadCpuModelFromFiles(name, files, onLoadProgress, 'wasm', wasmThreads()), backend };
    } catch (e) {
      if (!(e instanceof WasmUnsupportedError) || new URLSearchParams(location.search).get('backend') === 'wasm') throw e;
    }
  }
  return { ...await loadCpuModelFromFiles(name, files, onLoadProgress, 'ref'), backend: 'ref' };
}
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
    if (name !== 'config.json' && !name.endsWith('.safetensors') && name !== 'model.safetensors.index.json' && !(TOKENIZER_FILES as readonly string[]).includes(name)) continue;
    files.set(name, new Uint8Array(await f.arrayBuffer()));
    done += f.size;
    setProgress('reading files', done, total);
  }
  const first = list[0] as (File & { webkitRelativePath?: string }) | undefined;
  return finishLoad(first?.webkitRelativePath?.split('/')[0] || 'local folder', files);
}

async function finishLoad(name: string, files: Map<string, Uint8Array>): Promise<Loaded> {
  await loaded?.llm?.close();
  loaded?.close();
  loaded = null;
  const chosen = await chooseBackend();
  const { config, fwd, close, runner, backend, threads } = chosen === 'webgpu'
    ? await loadGpuModelFromFiles(name, files, onLoadProgress).then(({ config, model }) => ({
      config, fwd: model as ForwardModel<unknown>, close: () => model.close(), backend: chosen, threads: 1,
      runner: (blocks: number): ModelRunner => GpuDeepseekRunner.fromGpuModel(model, blocks),
    }))
    : await loadCpuModel(name, files, chosen).then(({ config, model, backend }) => ({
      config, fwd: model as ForwardModel<unknown>, close: () => { model.close(); void model.kernels.dispose(); }, backend, threads: model.kernels.threads,
      runner: (blocks: number): ModelRunner => new CpuRunner(model, blocks),
    }));
  // The level WasmRuntime.create chose (its default: relaxed where this browser validates those binaries).
  const simd = backend === 'wasm' ? defaultSimdLevel() : null;
  // The engine for chat, when the model directory has a tokenizer: a context of up to 2048 tokens.
  let llm: Llm | null = null;
  const tj = files.get('tokenizer.json');
  if (tj) {
    const dec = new TextDecoder();
    const tc = files.get('tokenizer_config.json');
    const tok = new ChatTokenizer(JSON.parse(dec.decode(tj)) as Record<string, unknown>, tc ? JSON.parse(dec.decode(tc)) as Record<string, unknown> : {});
    const maxModelLen = Math.min(config.max_position_embeddings, 2048);
    llm = Llm.fromParts(name, runner(Math.ceil(maxModelLen / 64)), tok, { maxModelLen, maxNumSeqs: 1, maxNumBatchedTokens: 512, maxWaiting: 4 });
  }
  $<HTMLButtonElement>('send').disabled = llm === null;
  loaded = { name, backend, simd, threads, fwd, close, vocab: config.vocab_size, llm };
  const where = backend === 'webgpu' ? await getDevice().then((ctx) => `WebGPU (${ctx.adapterDescription || ctx.platform})`)
    : backend === 'wasm' ? `the CPU (WebAssembly, ${simd} SIMD, ${threads} thread${threads === 1 ? '' : 's'})`
    : 'the CPU (plain-TypeScript kernels, slow)';
  $('status').textContent = `loaded ${name}: ${config.model_type}, ${config.num_hidden_layers} layers, vocab ${config.vocab_size} on ${where}`;
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
  const r = await generateAsync(loaded.fwd, prompt, { maxTokens, temperature, seed });
  const ms = performance.now() - t0;
  $('output').textContent = `${r.ids.join(',')}\n(${r.ids.length} tokens in ${(ms / 1000).toFixed(2)} s)`;
  return { ids: r.ids, logits: r.logits.map((l) => Array.from(l)), ms };
}

/** Answers one user message through the engine (chat template, sampler, stop tokens), streaming the text. */
async function chat(): Promise<{ text: string; ids: number[]; ms: number }> {
  const llm = loaded?.llm;
  if (!llm) throw new Error('chat needs a model with tokenizer.json');
  const rendered = llm.renderChat([{ role: 'user', content: $<HTMLInputElement>('message').value }]);
  const params = defaultSamplingParams({
    temperature: Number($<HTMLInputElement>('temperature').value), seed: Number($<HTMLInputElement>('seed').value),
    maxTokens: Number($<HTMLInputElement>('max').value),
  });
  const t0 = performance.now();
  let text = '';
  const ids: number[] = [];
  const out = $('answer');
  out.textContent = '';
  for await (const d of llm.engine.generate({ prompt: rendered.ids, params })) {
    if (d.type !== 'text') continue;
    text += d.text;
    ids.push(...d.tokenIds);
    out.textContent = text;
  }
  return { text, ids, ms: performance.now() - t0 };
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
  if (!('gpu' in navigator)) $('status').textContent = 'this browser has no WebGPU (navigator.gpu): models run on the CPU (WebAssembly)';
  $('load').addEventListener('click', guard(() => loadFromUrl($<HTMLInputElement>('model').value)));
  $('folder').addEventListener('change', guard(() => loadFromFolder($<HTMLInputElement>('folder').files!)));
  $('generate').addEventListener('click', guard(run));
  $('send').addEventListener('click', guard(chat));
  const message = q.get('chat');
  if (message !== null) $<HTMLInputElement>('message').value = message;
  if (q.get('autorun') !== '1') return;
  const report = q.get('report');
  let result: Record<string, unknown>;
  try {
    const events: string[] = [];
    const bar = $<HTMLProgressElement>('progress');
    const seen = new MutationObserver(() => events.push($('status').textContent ?? ''));
    seen.observe($('status'), { childList: true, characterData: true, subtree: true });
    await loadFromUrl($<HTMLInputElement>('model').value);
    const r = message !== null ? await chat() : await run();
    seen.disconnect();
    const ctx = loaded!.backend === 'webgpu' ? await getDevice() : null;
    result = { ...r, backend: loaded!.backend, simd: loaded!.simd, threads: loaded!.threads, parallelRuns: WasmPool.parallelRuns, platform: ctx?.platform ?? 'cpu', adapter: ctx?.adapterDescription ?? '', progressEvents: events.length, progressMax: bar.max };
  } catch (e) {
    result = { error: `${(e as Error).name}: ${(e as Error).message}\n${(e as Error).stack ?? ''}` };
  }
  if (report) await fetch(report, { method: 'POST', body: JSON.stringify(result) });
}

void main();
