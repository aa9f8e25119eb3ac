// The WebGPU backend in a browser: browser-entry.ts is bundled with esbuild (tsx's own dependency),
// served from a local HTTP server to headless Chromium (WebGPU on SwiftShader, its CPU Vulkan), and
// POSTs its results back. Checks the navigator.gpu path of device.ts and that the same WGSL compiles
// and computes correctly under a second WebGPU implementation (Chromium's Dawn + Tint on Vulkan).
// Needs Chromium (Debian package `chromium`; CHROMIUM_PATH overrides the binary).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TIMEOUT_MS = 120_000;

let server: Server | null = null;
let chrome: ChildProcess | null = null;
const profile = mkdtempSync(join(tmpdir(), 'seekd-chromium-'));
after(async () => {
  const c = chrome;
  if (c && c.exitCode === null && c.signalCode === null) {
    const exited = new Promise((r) => c.once('exit', r));
    // Chromium's own group (spawned detached): the browser with its GPU and renderer processes.
    try { process.kill(-c.pid!, 'SIGKILL'); } catch { c.kill('SIGKILL'); }
    await exited;
  }
  server?.close();
  rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
});

test('in headless Chromium (navigator.gpu) the same kernels match float64', { timeout: TIMEOUT_MS + 30_000 }, async () => {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL('./browser-entry.ts', import.meta.url))],
    bundle: true, format: 'esm', write: false, platform: 'browser', target: 'es2022',
    external: ['webgpu'], // the Node-only branch of device.ts, never taken in a browser
  });
  const html = `<!doctype html><html><body><script type="module" src="/entry.js"></script></body></html>`;
  const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no result from Chromium within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    server = createServer((req, res) => {
      if (req.method === 'POST' && req.url === '/result') {
        let body = '';
        req.on('data', (c: Buffer) => { body += c.toString(); });
        req.on('end', () => { res.end('ok'); clearTimeout(timer); resolve(JSON.parse(body) as Record<string, unknown>); });
        return;
      }
      if (req.url === '/entry.js') {
        res.setHeader('content-type', 'text/javascript');
        res.end(bundle.outputFiles[0]!.text);
        return;
      }
      res.setHeader('content-type', 'text/html');
      res.end(html);
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server!.address() as { port: number };
      chrome = spawn(CHROMIUM, [
        '--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader',
        `--user-data-dir=${profile}`, '--no-first-run', '--disable-extensions', `http://127.0.0.1:${port}/`,
      ], { stdio: 'ignore', detached: true });
      chrome.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start ${CHROMIUM}: ${e.message}`)); });
    });
  });
  console.log(`# browser: ${JSON.stringify(result)}`);
  assert.equal(result.error, undefined, String(result.error));
  assert.equal(result.platform, 'browser');
  assert.ok((result.matmulCalcDiff as number) < 1e-6, `matmul calc_diff ${result.matmulCalcDiff}`);
  assert.ok((result.gemmCalcDiff as number) < 1e-6, `fp8GemmNt calc_diff ${result.gemmCalcDiff}`);
  assert.ok(result.mlaOutOk, String(result.mlaOut));
  assert.ok(result.mlaLseOk, String(result.mlaLse));
});
