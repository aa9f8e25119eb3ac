// Shared test helpers: paths to ../shared test data, loading the golden references, diffs.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/**
 * `../shared` next to the repository root; a git worktree one level deeper (…/wt/<name>) finds it one
 * directory further up, or SEEKD_SHARED names it.
 */
export const SHARED_DIR = process.env.SEEKD_SHARED
  ?? [join(REPO_ROOT, '..', 'shared'), join(REPO_ROOT, '..', '..', 'shared')].find((d) => existsSync(join(d, 'testdata')))
  ?? join(REPO_ROOT, '..', 'shared');
export const REF_DIR = join(SHARED_DIR, 'testdata', 'deepseek-ref');
export const VARIANTS = ['tiny-v3-bf16', 'tiny-v3-fp8'] as const;

export interface RoutingRef { experts: number[][]; weights: number[][] }
export interface PromptRef {
  prompt: number[];
  prefill_last_logits: number[];
  greedy_tokens: number[];
  decode_logits: number[][];
  next_token_after_decode: number;
  prefill_routing: Record<string, RoutingRef>;
  decode_routing: Record<string, RoutingRef>[];
  prefill_block_out_last: Record<string, number[]>;
}
export interface ExpectedRef {
  variant: string;
  softmax_scale: number;
  rope_freqs_cis: { positions: number; cos: number[][]; sin: number[][] };
  prompts: PromptRef[];
}

const cache = new Map<string, ExpectedRef>();
export function expected(variant: string, attn: 'absorb' | 'naive' = 'absorb'): ExpectedRef {
  const key = `${variant}/${attn}`;
  let e = cache.get(key);
  if (!e) {
    e = JSON.parse(readFileSync(join(REF_DIR, variant, `expected_${attn}.json`), 'utf8')) as ExpectedRef;
    cache.set(key, e);
  }
  return e;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** One run of the `seekd` command: exit code, output, wall time. */
export interface SeekdRun { code: number | null; stdout: string; stderr: string; ms: number }

/** Runs `node bin/seekd.mjs ...args` from the repository root (stdin closed), with extra environment. */
export function seekd(args: string[], env: Record<string, string> = {}): Promise<SeekdRun> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const p = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'seekd.mjs'), ...args], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
    });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d; });
    p.stderr.on('data', (d: Buffer) => { stderr += d; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 }));
  });
}
