// The committed .wasm files are exactly what `npm run build:wasm` produces from the AssemblyScript
// sources (so CI catches a stale binary), and they validate in this engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
// @ts-expect-error: plain .mjs build script without type declarations
import { compileEntry, outputPath, WASM_ENTRIES } from '../../../scripts/build-wasm.mjs';
import { WASM_MODULES } from './runtime.ts';

test('committed wasm binaries are current and valid', async () => {
  assert.deepEqual(Object.keys(WASM_ENTRIES as object).sort(), Object.keys(WASM_MODULES).sort());
  for (const name of Object.keys(WASM_ENTRIES as object)) {
    const committed = readFileSync(outputPath(name));
    const built: Uint8Array = await compileEntry(name);
    assert.ok(WebAssembly.validate(committed), `${name}.wasm validates`);
    assert.ok(Buffer.from(built).equals(committed), `${name}.wasm is stale: run npm run build:wasm`);
  }
});
