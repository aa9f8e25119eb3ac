// SIMD level selection of the wasm runtime: the environment override, explicit per-runtime choice, and
// that each level really loads its own binary (relaxed: kernels-relaxed.wasm, which uses relaxed_madd).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compiledModules, defaultSimdLevel, relaxedSimdSupported, SIMD_ENV, WasmRuntime } from './runtime.ts';

function withEnv<T>(value: string | undefined, fn: () => T): T {
  const old = process.env[SIMD_ENV];
  if (value === undefined) delete process.env[SIMD_ENV];
  else process.env[SIMD_ENV] = value;
  try {
    return fn();
  } finally {
    if (old === undefined) delete process.env[SIMD_ENV];
    else process.env[SIMD_ENV] = old;
  }
}

test('SEEKD_WASM_SIMD pins the default level; auto prefers relaxed where supported; bad values throw', () => {
  assert.equal(withEnv('plain', defaultSimdLevel), 'plain');
  assert.equal(withEnv('relaxed', defaultSimdLevel), 'relaxed');
  assert.equal(withEnv('auto', defaultSimdLevel), relaxedSimdSupported() ? 'relaxed' : 'plain');
  assert.equal(withEnv(undefined, defaultSimdLevel), relaxedSimdSupported() ? 'relaxed' : 'plain');
  assert.throws(() => withEnv('fast', defaultSimdLevel), RangeError);
});

test('each SIMD level compiles its own kernels and flashmla modules; runtimes report their level', async () => {
  assert.ok(relaxedSimdSupported(), 'Node 20 with the flag runtime.ts sets, or Node 22+');
  const plain = compiledModules('plain'), relaxed = compiledModules('relaxed');
  for (const name of ['kernels', 'flashmla']) {
    assert.ok(plain[name] !== relaxed[name], `${name}: one module per level`);
    assert.deepEqual(WebAssembly.Module.exports(plain[name]!), WebAssembly.Module.exports(relaxed[name]!));
  }
  for (const simd of ['plain', 'relaxed'] as const) {
    const rt = await WasmRuntime.create({ threads: 2, simd });
    try {
      assert.equal(rt.simd, simd);
    } finally {
      await rt.dispose();
    }
  }
});
