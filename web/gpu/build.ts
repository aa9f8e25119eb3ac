// Bundles the in-page model runner (web/gpu/app.ts) for browsers with esbuild (tsx's own dependency):
// `buildGpuPage()` returns the page's two files (served by `seekd serve` at /gpu/ and by the browser test);
// run as a script it writes them as static files: node --import tsx web/gpu/build.ts OUT_DIR.
// The model code shares modules with the Node CLI; the Node built-ins some of them import (for file
// loading, worker threads and the like, never called on the page's path) resolve to an empty module.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const here = fileURLToPath(new URL('.', import.meta.url));

/** `node:*` (and bare Node built-in) imports as an empty CommonJS module: named imports are undefined. */
const nodeBuiltinsEmpty: Plugin = {
  name: 'node-builtins-empty',
  setup(b) {
    const builtins = /^(node:.*|fs|path|os|url|worker_threads|child_process|crypto|module|util|events|stream|http|net|zlib)$/;
    b.onResolve({ filter: builtins }, (a) => ({ path: a.path, namespace: 'node-empty' }));
    b.onResolve({ filter: /^webgpu$/ }, (a) => ({ path: a.path, namespace: 'node-empty' }));
    b.onLoad({ filter: /.*/, namespace: 'node-empty' }, () => ({ contents: 'module.exports = {};', loader: 'js' }));
  },
};

export async function buildGpuPage(): Promise<{ html: string; js: string }> {
  const out = await build({
    entryPoints: [join(here, 'app.ts')], bundle: true, format: 'esm', write: false, platform: 'browser', target: 'es2022',
    plugins: [nodeBuiltinsEmpty], logLevel: 'silent', legalComments: 'none',
    // package.json says sideEffects: false, but the backends register themselves on import (kernels/api.ts).
    ignoreAnnotations: true,
  });
  return { html: readFileSync(join(here, 'index.html'), 'utf8'), js: out.outputFiles[0]!.text };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: node --import tsx web/gpu/build.ts OUT_DIR');
    process.exit(2);
  }
  const { html, js } = await buildGpuPage();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'index.html'), html);
  writeFileSync(join(dir, 'app.js'), js);
  console.log(`wrote ${join(dir, 'index.html')} and ${join(dir, 'app.js')} (${js.length} bytes)`);
}
