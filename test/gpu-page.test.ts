// The in-page model runner (web/gpu) in headless Chromium on SwiftShader (its CPU Vulkan; a second WebGPU
// implementation: Chromium's Dawn + Tint). 1) The page fetches tiny-v3-fp8 (index + two shards) from a
// test server, shows its progress, runs the GPU forward in the page and POSTs its greedy tokens and
// logits: DeepSeek's reference tokens (= `seekd generate`'s, test/gpu-forward.test.ts), logits within the
// float32 tolerance 2e-5; with ?backend=cpu (as without an adapter) the page's CPU fallback, the wasm
// kernels (binaries fetched beside app.js, SIMD level by feature detection, one thread: the test page is
// not cross-origin isolated), gives `seekd generate`'s greedy tokens and reports which backend ran.
// 2) Served by `seekd serve` (/gpu/, the model from /gpu/model/): the page's greedy
// tokens equal `seekd generate`'s on the random model, and its chat answer (the engine in the page) the
// server's. Needs Chromium (Debian `chromium`; CHROMIUM_PATH).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { chromium } from 'playwright-core';
import { buildGpuPage } from '../src/server/gpu-page.ts';
import { startServer, type RunningServer } from '../src/server/http.ts';
import { Llm } from '../src/engine/llm.ts';
import { ensureRandomModel } from '../src/engine/builtin/random-model.ts';
import { REF_DIR, REPO_ROOT, expected, maxAbsDiff, seekd } from './helpers.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TIMEOUT_MS = 150_000;
const LOGIT_TOL = 2e-5;

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

/**
 * Serves `route` handlers (plus POST /result) on a local port, opens `page(origin)` in headless Chromium
 * (WebGPU on SwiftShader) and resolves with the JSON the page POSTs to `${origin}/result`.
 */
async function inChromium(page: (origin: string) => string, route: (path: string, res: import('node:http').ServerResponse) => boolean): Promise<Record<string, unknown>> {
  const profile = mkdtempSync(join(tmpdir(), 'seekd-chromium-page-'));
  let chrome: ChildProcess | null = null;
  let server: Server | null = null;
  cleanups.push(async () => {
    const c = chrome;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      try { process.kill(-c.pid!, 'SIGKILL'); } catch { c.kill('SIGKILL'); }
      await exited;
    }
    server?.close();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  });
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no result from Chromium within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'POST' && url.pathname === '/result') {
        let body = '';
        req.on('data', (c: Buffer) => { body += c.toString(); });
        req.on('end', () => { res.setHeader('access-control-allow-origin', '*'); res.end('ok'); clearTimeout(timer); resolve(JSON.parse(body) as Record<string, unknown>); });
        return;
      }
      if (!route(url.pathname, res)) { res.statusCode = 404; res.end(); }
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server!.address() as { port: number };
      chrome = spawn(CHROMIUM, [
        '--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader',
        `--user-data-dir=${profile}`, '--no-first-run', '--disable-extensions', page(`http://127.0.0.1:${port}`),
      ], { stdio: 'ignore', detached: true });
      chrome.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start ${CHROMIUM}: ${e.message}`)); });
    });
  });
}

/** The page on tiny-v3-fp8 (12-token prompt, 16 greedy tokens) with extra query parameters; its report. */
async function tinyPage(extra: string, isolated = false): Promise<Record<string, unknown>> {
  const { html, js, worker, wasm } = await buildGpuPage();
  const modelDir = join(REF_DIR, 'tiny-v3-fp8');
  const p = expected('tiny-v3-fp8').prompts[2]!; // 12 tokens, then 16 greedy tokens
  const served: string[] = [];
  const result = await inChromium((o) => `${o}/?model=/model/&ids=${p.prompt.join(',')}&max=16&autorun=1&report=/result${extra}`, (path, res) => {
    if (isolated) { res.setHeader('cross-origin-opener-policy', 'same-origin'); res.setHeader('cross-origin-embedder-policy', 'require-corp'); }
    if (path === '/') { res.setHeader('content-type', 'text/html'); res.end(html); return true; }
    if (path === '/app.js') { res.setHeader('content-type', 'text/javascript'); res.end(js); return true; }
    if (path === '/pool-worker.js') { served.push('pool-worker.js'); res.setHeader('content-type', 'text/javascript'); res.end(worker); return true; }
    const bin = wasm[path.slice(1)];
    if (bin) { served.push(path.slice(1)); res.setHeader('content-type', 'application/wasm'); res.end(bin); return true; }
    if (!path.startsWith('/model/')) return false;
    try {
      const bytes = readFileSync(join(modelDir, basename(path)));
      served.push(basename(path));
      res.setHeader('content-length', bytes.byteLength);
      res.end(bytes);
      return true;
    } catch {
      return false;
    }
  });
  assert.equal(result.error, undefined, String(result.error));
  console.log(`# page (${result.backend}): ${result.platform} ${result.adapter}; ${(result.ms as number).toFixed(0)} ms for 12 + 16 tokens; ${result.progressEvents} progress updates`);
  assert.deepEqual(result.ids, p.greedy_tokens);
  const logits = result.logits as number[][];
  let worst = maxAbsDiff(logits[0]!, p.prefill_last_logits);
  for (let j = 1; j < 16; j++) worst = Math.max(worst, maxAbsDiff(logits[j]!, p.decode_logits[j - 1]!));
  console.log(`# page: max |logit - reference| ${worst.toExponential(2)}`);
  assert.ok(worst <= LOGIT_TOL, `logits differ by ${worst}`);
  assert.ok((result.progressEvents as number) >= 2, 'the page showed its loading progress');
  assert.deepEqual([...new Set(served)].filter((f) => !f.endsWith('.wasm') && f !== 'pool-worker.js').sort(), ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  result.served = served;
  return result;
}

test('the page runs tiny-v3-fp8 on WebGPU (SwiftShader): the reference greedy tokens and logits', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const r = await tinyPage('');
  assert.equal(r.backend, 'webgpu');
  assert.equal(r.platform, 'browser');
});

test('without WebGPU (?backend=cpu) the page falls back to the wasm kernels: seekd generate\'s greedy tokens, the reference logits', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const p = expected('tiny-v3-fp8').prompts[2]!;
  const cli = seekd(['generate', '--model', join(REF_DIR, 'tiny-v3-fp8'), '--ids', p.prompt.join(','), '--max-tokens', '16', '--json']);
  const r = await tinyPage('&backend=cpu');
  assert.equal(r.backend, 'wasm');
  // Chromium validates the relaxed-SIMD builds (the page picks them as Node does); no cross-origin
  // isolation here, so one thread.
  assert.equal(r.simd, 'relaxed');
  assert.equal(r.threads, 1);
  assert.ok(!(r.served as string[]).includes('pool-worker.js'), 'one thread starts no worker');
  assert.equal(r.parallelRuns, 0);
  // The binaries came over HTTP (never node:fs): the kernels and FlashMLA, at the detected level.
  assert.ok((r.served as string[]).includes('kernels-relaxed.wasm') && (r.served as string[]).includes('flashmla-relaxed.wasm'), String(r.served));
  console.log(`# page wasm fallback: ${r.simd} SIMD, ${r.threads} thread(s), ${(r.ms as number).toFixed(0)} ms for 12 + 16 tokens`);
  const want = await cli;
  assert.equal(want.code, 0, want.stderr);
  assert.deepEqual(r.ids, (JSON.parse(want.stdout) as { ids: number[] }).ids);
});

test('cross-origin isolated (COOP/COEP), the wasm fallback runs 2 threads (the pool as Web Workers): the same tokens', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const r = await tinyPage('&backend=cpu&threads=2', true);
  assert.equal(r.backend, 'wasm');
  assert.equal(r.threads, 2);
  assert.ok((r.served as string[]).includes('pool-worker.js'), 'the pool started its worker');
  assert.ok((r.parallelRuns as number) > 0, 'ops ran on the workers too');
  console.log(`# page wasm fallback: ${r.simd} SIMD, ${r.threads} threads (isolated page; ${r.parallelRuns} ops on the workers), ${(r.ms as number).toFixed(0)} ms for 12 + 16 tokens`);
});

test('?backend=ref runs the plain-TypeScript kernels in the page: the same tokens and logits', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const r = await tinyPage('&backend=ref');
  assert.equal(r.backend, 'ref');
  assert.equal(r.simd, null);
  assert.ok(!(r.served as string[]).some((f) => f.endsWith('.wasm')), 'ref fetches no wasm');
});

test('served by seekd serve at /gpu/: the page greedy tokens equal seekd generate on the random model', { timeout: TIMEOUT_MS + 60_000 }, async () => {
  const dir = ensureRandomModel();
  const ids = '1,500,77,1024,9';
  const cli = seekd(['generate', '--model', dir, '--ids', ids, '--max-tokens', '8', '--json']);
  const llm = await Llm.load({ model: dir, backend: 'ref', maxModelLen: 64, maxNumSeqs: 1 });
  const srv: RunningServer = await startServer({ port: 0 }, llm);
  cleanups.push(async () => { await srv.shutdown(1000); await llm.close(); });
  // The model files are served from the model directory only, by name.
  const bad = await fetch(`${srv.url}/gpu/model/..%2Fconfig.json`);
  assert.equal(bad.status, 404);
  // The wasm binaries the page's CPU fallback fetches beside app.js: the committed files, byte for byte.
  for (const name of ['kernels.wasm', 'kernels-relaxed.wasm', 'flashmla.wasm', 'flashmla-relaxed.wasm']) {
    const res = await fetch(`${srv.url}/gpu/${name}`);
    assert.equal(res.status, 200, name);
    assert.equal(res.headers.get('content-type'), 'application/wasm');
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), new Uint8Array(readFileSync(join(REPO_ROOT, 'src', 'kernels', 'wasm', name))));
  }
  assert.equal((await fetch(`${srv.url}/gpu/nope.wasm`)).status, 404);
  // Cross-origin isolated (the wasm fallback's worker threads), with the pool's worker beside app.js.
  const pageRes = await fetch(`${srv.url}/gpu/`);
  assert.equal(pageRes.headers.get('cross-origin-opener-policy'), 'same-origin');
  assert.equal(pageRes.headers.get('cross-origin-embedder-policy'), 'require-corp');
  const workerRes = await fetch(`${srv.url}/gpu/pool-worker.js`);
  assert.equal(workerRes.status, 200);
  assert.match(await workerRes.text(), /Atomics\.wait/);
  const result = await inChromium((o) => `${srv.url}/gpu/?ids=${ids}&max=8&autorun=1&report=${encodeURIComponent(`${o}/result`)}`, () => false);
  assert.equal(result.error, undefined, String(result.error));
  const want = await cli;
  assert.equal(want.code, 0, want.stderr);
  assert.deepEqual(result.ids, (JSON.parse(want.stdout) as { ids: number[] }).ids);
  console.log(`# served page: ${(result.ms as number).toFixed(0)} ms for 5 + 8 tokens of the built-in model`);

  // Chat: the page's engine (template, tokenizer, scheduler, sampler) over the WebGPU runner answers as
  // the server's engine over the CPU model.
  const message = 'Hello there!';
  const api = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: message }], max_tokens: 10, temperature: 0 }),
  });
  const want2 = (await api.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
  const chat = await inChromium((o) => `${srv.url}/gpu/?chat=${encodeURIComponent(message)}&max=10&autorun=1&report=${encodeURIComponent(`${o}/result`)}`, () => false);
  assert.equal(chat.error, undefined, String(chat.error));
  assert.equal((chat.ids as number[]).length, want2.usage.completion_tokens);
  assert.equal(chat.text, want2.choices[0]!.message.content);
  console.log(`# served page chat: ${JSON.stringify(chat.text)} in ${(chat.ms as number).toFixed(0)} ms`);
});

test('web/gpu/build.ts writes the page as static files', async () => {
  const out = mkdtempSync(join(tmpdir(), 'seekd-gpu-static-'));
  cleanups.push(() => rmSync(out, { recursive: true, force: true }));
  const r = await new Promise<{ code: number | null; err: string }>((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'web', 'gpu', 'build.ts'), out], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { err += d; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, err }));
  });
  assert.equal(r.code, 0, r.err);
  assert.match(readFileSync(join(out, 'index.html'), 'utf8'), /<script type="module" src="app.js">/);
  const js = readFileSync(join(out, 'app.js'), 'utf8');
  assert.ok(js.length > 50_000 && js.includes('navigator'), `app.js of ${js.length} bytes`);
  assert.match(readFileSync(join(out, 'pool-worker.js'), 'utf8'), /Atomics\.wait/);
  for (const name of ['kernels.wasm', 'kernels-relaxed.wasm', 'flashmla.wasm', 'flashmla-relaxed.wasm']) {
    assert.deepEqual(readFileSync(join(out, name)), readFileSync(join(REPO_ROOT, 'src', 'kernels', 'wasm', name)), name);
  }
});

test('playwright: a model picked from a local folder runs in the page (WebGPU on SwiftShader), greedy tokens as the reference', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const { html, js } = await buildGpuPage();
  const p = expected('tiny-v3-bf16').prompts[1]!; // 5 tokens, then 16 greedy tokens
  const server = createServer((req, res) => {
    if (req.url === '/app.js') { res.setHeader('content-type', 'text/javascript'); res.end(js); return; }
    res.setHeader('content-type', 'text/html');
    res.end(html);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const profile = mkdtempSync(join(tmpdir(), 'seekd-chromium-pw-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, timeout: 60_000,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--no-first-run'],
  });
  cleanups.push(async () => { await browser.close(); server.close(); rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 }); });
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const { port } = server.address() as { port: number };
  await page.goto(`http://127.0.0.1:${port}/`);
  // The folder as the browser hands it over: every file of the directory (expected_*.json are skipped).
  await page.setInputFiles('#folder', join(REF_DIR, 'tiny-v3-bf16'));
  await page.waitForFunction("document.getElementById('status').textContent.startsWith('loaded')");
  assert.match((await page.textContent('#status'))!, /on WebGPU/);
  await page.fill('#ids', p.prompt.join(','));
  await page.fill('#max', '16');
  await page.click('#generate');
  await page.waitForFunction("document.getElementById('output').textContent.includes('tokens in')");
  const ids = (await page.textContent('#output'))!.split('\n')[0]!.split(',').map(Number);
  assert.deepEqual(ids, p.greedy_tokens);
  assert.deepEqual(errors, []);
});
