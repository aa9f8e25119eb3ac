// The committed .wasm files are exactly what `npm run build:wasm` produces from the AssemblyScript
// sources (so CI catches a stale binary), and they validate in this engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
// @ts-expect-error: plain .mjs build script without type declarations
import { compileEntry, outputPath, WASM_ENTRIES } from '../../../scripts/build-wasm.mjs';
import { WASM_MODULES, WASM_RELAXED, relaxedSimdSupported } from './runtime.ts';

test('committed wasm binaries are current and valid', async () => {
  // Every built binary is loaded: a module (plain SIMD) or a module's relaxed-SIMD variant.
  const loaded = [...Object.keys(WASM_MODULES), ...Object.keys(WASM_RELAXED).map((n) => `${n}-relaxed`)];
  assert.deepEqual(Object.keys(WASM_ENTRIES as object).sort(), loaded.sort());
  assert.ok(relaxedSimdSupported(), 'this Node (20 with the flag runtime.ts sets, or 22+) runs relaxed SIMD');
  for (const name of Object.keys(WASM_ENTRIES as object)) {
    const committed = readFileSync(outputPath(name));
    const built: Uint8Array = await compileEntry(name);
    assert.ok(WebAssembly.validate(committed), `${name}.wasm validates`);
    // f32x4.relaxed_madd (0xfd 0x105 as LEB128): in the relaxed builds, never in the plain ones.
    assert.equal(Buffer.from(committed).includes(Buffer.from([0xfd, 0x85, 0x02])), name.endsWith('-relaxed'), `${name}.wasm relaxed_madd use`);
    assert.ok(Buffer.from(built).equals(committed), `${name}.wasm is stale: run npm run build:wasm`);
  }
});
