// The in-page model runner (web/gpu: the GPU forward in a browser tab) bundled for browsers with esbuild
// (tsx's own dependency), for `seekd serve` (/gpu/), the browser test and static builds (web/gpu/build.ts).
// The model code shares modules with the Node CLI; the Node built-ins some of them import (file loading,
// worker threads, ...; never called on the page's path) resolve to an empty module, except node:crypto and
// the globals Buffer / setImmediate, which the engine uses (web/gpu/shims).
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { WASM_MODULES, WASM_RELAXED } from '../kernels/wasm/runtime.ts';

const PAGE_DIR = fileURLToPath(new URL('../../web/gpu/', import.meta.url));

/** `node:*` (and bare Node built-in) imports as an empty CommonJS module: named imports are undefined. */
const nodeBuiltinsEmpty: Plugin = {
  name: 'node-builtins-empty',
  setup(b) {
    // Worker threads (the wasm pool's) as module Web Workers running pool-worker.js.
    b.onResolve({ filter: /platform\/worker\.ts$/ }, () => ({ path: `${PAGE_DIR}shims/worker.ts` }));
    // The engine's node:crypto (prefix-cache hashes, template nonces): a small browser implementation.
    b.onResolve({ filter: /^(node:)?crypto$/ }, () => ({ path: `${PAGE_DIR}shims/crypto.ts` }));
    const builtins = /^(node:.*|fs|path|os|url|worker_threads|child_process|crypto|module|util|events|stream|http|net|zlib|webgpu)$/;
    b.onResolve({ filter: builtins }, (a) => ({ path: a.path, namespace: 'node-empty' }));
    b.onLoad({ filter: /.*/, namespace: 'node-empty' }, () => ({ contents: 'module.exports = {};', loader: 'js' }));
  },
};

export interface GpuPage {
  html: string;
  js: string;
  /** The wasm pool's worker (src/kernels/wasm/pool-worker.ts) for module Web Workers: pool-worker.js beside app.js. */
  worker: string;
  /**
   * The wasm kernels' binaries by file name (kernels.wasm, ...): the bundle fetches them next to itself
   * (src/kernels/wasm/runtime.ts WASM_MODULES / WASM_RELAXED, URLs relative to the bundle), so they are
   * served and written beside app.js.
   */
  wasm: Record<string, Uint8Array<ArrayBuffer>>;
}

/** The committed binaries the page's wasm backend loads, by file name. */
export function gpuPageWasm(): Record<string, Uint8Array<ArrayBuffer>> {
  const out: Record<string, Uint8Array<ArrayBuffer>> = {};
  for (const url of [...Object.values(WASM_MODULES), ...Object.values(WASM_RELAXED)]) out[basename(fileURLToPath(url))] = new Uint8Array(readFileSync(url));
  return out;
}

export async function buildGpuPage(): Promise<GpuPage> {
  const out = await build({
    entryPoints: [`${PAGE_DIR}app.ts`], bundle: true, format: 'esm', write: false, platform: 'browser', target: 'es2022',
    plugins: [nodeBuiltinsEmpty], logLevel: 'silent', legalComments: 'none',
    // package.json says sideEffects: false, but the backends register themselves on import (kernels/api.ts).
    ignoreAnnotations: true,
    // Buffer and setImmediate, which the engine's modules use as Node globals.
    inject: [`${PAGE_DIR}shims/globals.ts`],
  });
  const worker = await build({
    entryPoints: [fileURLToPath(new URL('../kernels/wasm/pool-worker.ts', import.meta.url))], bundle: true, format: 'esm', write: false,
    platform: 'browser', target: 'es2022', logLevel: 'silent', legalComments: 'none',
    plugins: [{
      name: 'pool-worker-web',
      setup(b) {
        b.onResolve({ filter: /platform\/worker\.ts$/ }, () => ({ path: `${PAGE_DIR}shims/worker.ts` }));
        b.onResolve({ filter: /^(node:)?worker_threads$/ }, () => ({ path: `${PAGE_DIR}shims/worker-threads.ts` }));
        b.onResolve({ filter: /^node:/ }, (a) => ({ path: a.path, namespace: 'node-empty' }));
        b.onLoad({ filter: /.*/, namespace: 'node-empty' }, () => ({ contents: 'module.exports = {};', loader: 'js' }));
      },
    }],
    inject: [`${PAGE_DIR}shims/worker-process.ts`],
  });
  return { html: readFileSync(`${PAGE_DIR}index.html`, 'utf8'), js: out.outputFiles[0]!.text, worker: worker.outputFiles[0]!.text, wasm: gpuPageWasm() };
}
