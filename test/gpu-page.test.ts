// The in-page model runner (web/gpu) in headless Chromium on SwiftShader (its CPU Vulkan; a second WebGPU
// implementation: Chromium's Dawn + Tint): the page fetches tiny-v3-fp8 from the test server (index +
// two shards), shows its progress, runs the GPU forward in the page and POSTs its greedy tokens and
// logits. They must be DeepSeek's reference tokens (= `seekd generate`'s, test/gpu-forward.test.ts), the
// logits within the float32 tolerance 2e-5. Needs Chromium (Debian `chromium`; CHROMIUM_PATH overrides).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { buildGpuPage } from '../web/gpu/build.ts';
import { REF_DIR, expected, maxAbsDiff } from './helpers.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TIMEOUT_MS = 150_000;
const LOGIT_TOL = 2e-5;

let server: Server | null = null;
let chrome: ChildProcess | null = null;
const profile = mkdtempSync(join(tmpdir(), 'seekd-chromium-page-'));
after(async () => {
  const c = chrome;
  if (c && c.exitCode === null && c.signalCode === null) {
    const exited = new Promise((r) => c.once('exit', r));
    try { process.kill(-c.pid!, 'SIGKILL'); } catch { c.kill('SIGKILL'); }
    await exited;
  }
  server?.close();
  rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
});

test('the page runs tiny-v3-fp8 on WebGPU (SwiftShader): the reference greedy tokens and logits', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const { html, js } = await buildGpuPage();
  const modelDir = join(REF_DIR, 'tiny-v3-fp8');
  const p = expected('tiny-v3-fp8').prompts[2]!; // 12 tokens, then 16 greedy tokens
  const served: string[] = [];
  const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no result from Chromium within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'POST' && url.pathname === '/result') {
        let body = '';
        req.on('data', (c: Buffer) => { body += c.toString(); });
        req.on('end', () => { res.end('ok'); clearTimeout(timer); resolve(JSON.parse(body) as Record<string, unknown>); });
        return;
      }
      if (url.pathname === '/app.js') {
        res.setHeader('content-type', 'text/javascript');
        res.end(js);
        return;
      }
      if (url.pathname.startsWith('/model/')) {
        const f = basename(url.pathname);
        try {
          const bytes = readFileSync(join(modelDir, f));
          served.push(f);
          res.setHeader('content-length', bytes.byteLength);
          res.end(bytes);
        } catch {
          res.statusCode = 404;
          res.end();
        }
        return;
      }
      res.setHeader('content-type', 'text/html');
      res.end(html);
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server!.address() as { port: number };
      const page = `http://127.0.0.1:${port}/?model=/model/&ids=${p.prompt.join(',')}&max=16&autorun=1&report=/result`;
      chrome = spawn(CHROMIUM, [
        '--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader',
        `--user-data-dir=${profile}`, '--no-first-run', '--disable-extensions', page,
      ], { stdio: 'ignore', detached: true });
      chrome.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start ${CHROMIUM}: ${e.message}`)); });
    });
  });
  assert.equal(result.error, undefined, String(result.error));
  console.log(`# page: ${result.platform} ${result.adapter}; ${(result.ms as number).toFixed(0)} ms for 12 + 16 tokens; ${result.progressEvents} progress updates`);
  assert.equal(result.platform, 'browser');
  assert.deepEqual(result.ids, p.greedy_tokens);
  const logits = result.logits as number[][];
  let worst = maxAbsDiff(logits[0]!, p.prefill_last_logits);
  for (let j = 1; j < 16; j++) worst = Math.max(worst, maxAbsDiff(logits[j]!, p.decode_logits[j - 1]!));
  console.log(`# page: max |logit - reference| ${worst.toExponential(2)}`);
  assert.ok(worst <= LOGIT_TOL, `logits differ by ${worst}`);
  assert.ok((result.progressEvents as number) >= 2, 'the page showed its loading progress');
  assert.deepEqual([...new Set(served)].sort(), ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
});
