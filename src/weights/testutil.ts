// Helpers shared by the weights tests: hand-built safetensors bytes, temp dirs, a seeded PRNG.
import assert from 'node:assert/strict';
import { accessSync, constants as fsc, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsError, type SafetensorsRule } from './errors.ts';
import { lengthPrefix } from './writer.ts';
import { mulberry32 } from '../tensor/random.ts';

/** Bytes of a file with the given header text (used verbatim, no padding) and data area. */
export function craft(headerText: string, data: Uint8Array | number = 0, lengthOverride?: bigint): Uint8Array {
  const header = new TextEncoder().encode(headerText);
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + header.byteLength + d.byteLength);
  out.set(lengthPrefix(header.byteLength), 0);
  if (lengthOverride !== undefined) new DataView(out.buffer).setBigUint64(0, lengthOverride, true);
  out.set(header, 8);
  out.set(d, 8 + header.byteLength);
  return out;
}

/**
 * A temp directory removed by the returned cleanup function. `inMemory` puts it on /dev/shm when that
 * exists (for I/O-heavy tests on small files; falls back to the OS temp dir).
 */
export function tempDir(prefix = 'seekd-weights-', inMemory = false): { dir: string; cleanup: () => void } {
  let base = tmpdir();
  if (inMemory) {
    try {
      accessSync('/dev/shm', fsc.W_OK);
      base = '/dev/shm';
    } catch { /* no tmpfs: use the temp dir */ }
  }
  const dir = mkdtempSync(join(base, prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

let fileCounter = 0;
/** Writes bytes to a fresh file in `dir` and returns its path. */
export function writeTemp(dir: string, bytes: Uint8Array, name?: string): string {
  const p = join(dir, name ?? `f${fileCounter++}.safetensors`);
  writeFileSync(p, bytes);
  return p;
}

/** Asserts that `fn` throws a SafetensorsError with this rule (and tensor, when given). */
export function throwsRule(fn: () => unknown, rule: SafetensorsRule, tensor?: string, label?: string): SafetensorsError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  const what = label ? ` (${label})` : '';
  assert.ok(err !== undefined, `expected a SafetensorsError '${rule}'${what}, nothing was thrown`);
  assert.ok(err instanceof SafetensorsError, `expected a SafetensorsError '${rule}'${what}, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
  assert.equal(err.rule, rule, `rule${what}: ${err.message}`);
  if (tensor !== undefined) assert.equal(err.tensor, tensor, `tensor${what}: ${err.message}`);
  return err;
}

/** Seeded PRNG (mulberry32) so a failing case reproduces from its seed. */
export const rng = mulberry32;

/**
 * The shared reference test data: `../shared` beside the repository root (CI, /work/main); a helper
 * worktree one level deeper falls back to `../../shared`. SEEKD_SHARED overrides both.
 */
export const SHARED_REF: string = (() => {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const candidates = [process.env.SEEKD_SHARED, join(root, '..', 'shared'), join(root, '..', '..', 'shared')];
  const found = candidates.find((c) => c !== undefined && existsSync(join(c, 'testdata', 'deepseek-ref')));
  return join(found ?? join(root, '..', 'shared'), 'testdata', 'deepseek-ref');
})();
