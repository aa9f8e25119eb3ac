// Writes the in-page model runner (web/gpu/app.ts bundled, index.html, and the wasm kernels' binaries and
// pool worker (pool-worker.js) its CPU fallback fetches beside app.js) as static files:
//   node --import tsx web/gpu/build.ts OUT_DIR
// Serve OUT_DIR with the model directory next to it (the page's default model URL is 'model/'), or pick a
// local folder in the page. For the wasm fallback's threads, serve them with
// Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp (else one thread). `seekd serve` serves the same page at /gpu/ with its model at /gpu/model/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGpuPage } from '../../src/server/gpu-page.ts';

export { buildGpuPage };

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node --import tsx web/gpu/build.ts OUT_DIR');
  process.exit(2);
}
const { html, js, worker, wasm } = await buildGpuPage();
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'index.html'), html);
writeFileSync(join(dir, 'app.js'), js);
writeFileSync(join(dir, 'pool-worker.js'), worker);
for (const [name, bytes] of Object.entries(wasm)) writeFileSync(join(dir, name), bytes);
console.log(`wrote ${join(dir, 'index.html')}, ${join(dir, 'app.js')} (${js.length} bytes) and ${Object.keys(wasm).join(', ')}`);
