#!/usr/bin/env node
// Builds the AssemblyScript kernels into committed .wasm files (`npm run build:wasm`), so the package
// runs without a build step; src/kernels/wasm/build.test.ts rebuilds in memory and checks the committed
// bytes are current. Every module imports ONE shared memory (env.memory) and is instantiated on the main
// thread and in every pool worker (see src/kernels/wasm/pool.ts). To add a module, add an entry here.
import asc from 'assemblyscript/asc';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * name -> AssemblyScript entry (relative to the repo root) and the address of its static data; output
 * is src/kernels/wasm/<name>.wasm. All modules share one memory, so each gets its own static window
 * below 64 KiB (the JS heap starts at 64 KiB): kernels [1024, 16384), the next [16384, 32768), ...
 */
export const WASM_ENTRIES = {
  kernels: { src: 'src/kernels/wasm/assembly/kernels.ts', memoryBase: 1024 },
  // The same sources with relaxed SIMD enabled (ASC_FEATURE_RELAXED_SIMD: fused multiply-adds). It is an
  // alternative binary for the module `kernels`, loaded instead of kernels.wasm where the engine
  // validates it (src/kernels/wasm/runtime.ts), so it shares kernels' static window.
  'kernels-relaxed': { src: 'src/kernels/wasm/assembly/kernels.ts', memoryBase: 1024, relaxed: true },
  flashmla: { src: 'src/kernels/wasm/assembly/flashmla.ts', memoryBase: 16384 },
  'flashmla-relaxed': { src: 'src/kernels/wasm/assembly/flashmla.ts', memoryBase: 16384, relaxed: true },
};

/** Memory limits shared by every module (pages of 64 KiB): 4 GiB maximum, the wasm32 limit. */
export const ASC_FLAGS = [
  '--enable', 'simd', '--enable', 'threads', '-O3', '--noAssert', '--runtime', 'stub',
  '--importMemory', '--sharedMemory', '--initialMemory', '1', '--maximumMemory', '65536',
];

/** Compiles one entry; resolves to the .wasm bytes. */
export async function compileEntry(name) {
  const spec = WASM_ENTRIES[name];
  if (!spec) throw new Error(`unknown wasm entry ${name}`);
  const entry = spec.src;
  let bytes = null;
  const errs = [];
  const features = spec.relaxed ? ['--enable', 'relaxed-simd'] : [];
  const { error } = await asc.main([entry, ...ASC_FLAGS, ...features, '--memoryBase', String(spec.memoryBase), '--outFile', `${name}.wasm`], {
    baseDir: root,
    writeFile(file, contents) { if (file.endsWith('.wasm')) bytes = contents; },
    stdout: { write() { return true; } },
    stderr: { write(s) { errs.push(String(s)); return true; } },
  });
  if (error || !bytes) throw new Error(`asc failed for ${entry}: ${error?.message ?? ''}\n${errs.join('')}`);
  return new Uint8Array(bytes);
}

export function outputPath(name) {
  return `${root}src/kernels/wasm/${name}.wasm`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const name of Object.keys(WASM_ENTRIES)) {
    const bytes = await compileEntry(name);
    writeFileSync(outputPath(name), bytes);
    console.log(`${outputPath(name)}: ${bytes.length} bytes`);
  }
}
