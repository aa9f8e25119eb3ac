// `seekd bench serve`: serving benchmark like `vllm bench serve`. Against --url, or against a
// `seekd serve` it starts itself (a child process, so the load generator does not share the engine's
// thread). Prints a table (or --json) with request/output throughput and TTFT/TPOT/ITL/E2EL percentiles
// per concurrency, plus the throughput ratio of each concurrency to the first.
// Soak mode: --duration S runs each concurrency for S seconds, --abort-rate and --random-sampling vary the
// requests, and --soak-out FILE samples the server's RSS, V8 heap and KV usage from /metrics; a soak exits 1
// on any failure other than 429/503 or when KV usage is not back to 0 once the server is idle.
// Speculative decoding: with --speculative mtp it first measures a server without it (same model and
// options), then one with it, and reports per concurrency the acceptance rate (from the server's
// vllm:spec_decode_* counters over the measured requests), the mean tokens per verify step and the
// speed-up in output tok/s and TPOT. Against --url it reports the acceptance rate only.
import type { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../errors.ts';
import { GUIDED_BENCH_KINDS, runLoad, type GuidedBenchKind, type LoadResult } from '../loadgen.ts';
import { SoakSampler, summarize, writeSoak, type SoakSummary } from '../soak.ts';
import { engineOptions, intOpt, parseSpeculative, type EngineCliOptions } from './serve.ts';

interface BenchServeOptions extends EngineCliOptions {
  url?: string;
  apiKey?: string;
  concurrency: string;
  numPrompts?: string;
  inputLen: string;
  outputLen: string;
  seed: string;
  duration?: string;
  abortRate?: string;
  randomSampling?: boolean;
  guided?: string;
  soakOut?: string;
  sampleInterval: string;
  warmup?: string;
  json?: boolean;
}

function numOpt(name: string, v: string | undefined, min: number, max = Infinity, minExclusive = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || (minExclusive && n === min) || n > max) {
    throw new UsageError(`--${name} must be a number ${minExclusive ? '>' : '>='} ${min}${max < Infinity ? ` and <= ${max}` : ''}, got '${v}'`);
  }
  return n;
}

const MiB = 1024 * 1024;
function soakLines(s: SoakSummary): string[] {
  const mem = (name: string, c: SoakSummary['rssBytes']) =>
    `${name}: start ${(c.start / MiB).toFixed(1)} MiB, min ${(c.min / MiB).toFixed(1)}, max ${(c.max / MiB).toFixed(1)}, end ${(c.end / MiB).toFixed(1)}, slope ${(c.slopePerMin / MiB).toFixed(3)} MiB/min after ${s.warmupS} s`;
  return [
    `soak: ${s.samples} samples`,
    mem('  RSS ', s.rssBytes),
    mem('  heap', s.heapUsedBytes),
    `  KV usage: max ${(s.kvUsage.max * 100).toFixed(1)}%, when idle ${(s.kvUsageIdle * 100).toFixed(1)}%`,
  ];
}

/** The server's speculative-decoding counters (null when it does not speculate). */
async function specCounters(url: string, apiKey?: string): Promise<{ steps: number; drafted: number; accepted: number } | null> {
  const r = await fetch(`${url}/metrics`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
  if (!r.ok) return null;
  const text = await r.text();
  const sum = (name: string): number | null => {
    let found = false, total = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
      found = true;
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return found ? total : null;
  };
  const steps = sum('vllm:spec_decode_num_drafts_total'), drafted = sum('vllm:spec_decode_num_draft_tokens_total'), accepted = sum('vllm:spec_decode_num_accepted_tokens_total');
  return steps === null || drafted === null || accepted === null ? null : { steps, drafted, accepted };
}

export interface SpecLevel {
  concurrency: number;
  /** Sequence steps verified with drafts, draft tokens, accepted drafts over the measured requests. */
  steps: number;
  drafted: number;
  accepted: number;
  acceptanceRate: number;
  /** Tokens a verify step emits on average: 1 + accepted / steps. */
  meanTokensPerStep: number;
  /** Output tok/s with speculation over without (null without a baseline run). */
  speedup: number | null;
  /** TPOT p50 without over with (null without a baseline run). */
  tpotSpeedup: number | null;
}

const BIN = fileURLToPath(new URL('../../../bin/seekd.mjs', import.meta.url));

/** Starts `seekd serve` on a free port and resolves its base URL once /health is 200. */
export async function spawnServer(args: string[], timeoutMs = 300_000): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), timeoutMs);
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(m[1]!); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}:\n${log}`)); });
  });
  for (;;) {
    const ok = await fetch(`${url}/health`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (child.exitCode !== null) throw new Error(`server exited:\n${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url, child,
    stop: () => new Promise<void>((r) => { if (child.exitCode !== null) return r(); child.once('exit', () => r()); child.kill('SIGTERM'); }),
  };
}

function fmt(r: LoadResult, base: LoadResult): string[] {
  const f = (x: number, d = 1) => x.toFixed(d);
  return [String(r.concurrency), `${r.completed}/${r.sent}`, f(r.requestThroughput, 2), f(r.outputThroughput), f(r.outputThroughput / base.outputThroughput, 2),
    `${f(r.ttftMs.p50)}/${f(r.ttftMs.p90)}/${f(r.ttftMs.p99)}`, `${f(r.tpotMs.p50)}/${f(r.tpotMs.p90)}/${f(r.tpotMs.p99)}`, `${f(r.itlMs.p50)}/${f(r.itlMs.p90)}/${f(r.itlMs.p99)}`];
}

export function register(program: Command): void {
  const bench = program.command('bench').description('benchmarks');
  engineOptions(bench.command('serve').description('serving benchmark (like vllm bench serve): throughput and latency percentiles per concurrency'))
    .option('--url <url>', 'benchmark this server instead of starting one')
    .option('--api-key <key>', 'API key for --url')
    .option('--concurrency <list>', 'comma-separated concurrencies', '1,16')
    .option('--num-prompts <n>', 'requests per concurrency (default: max(4, 2 x concurrency))')
    .option('--input-len <words>', 'prompt length in words', '32')
    .option('--output-len <n>', 'tokens generated per request (ignore_eos)', '64')
    .option('--seed <n>', 'prompt seed', '0')
    .option('--duration <s>', 'run each concurrency for this many seconds instead of --num-prompts requests (soak)')
    .option('--abort-rate <p>', 'fraction of requests the client aborts mid-stream (0-1)', '0')
    .option('--random-sampling', 'random endpoint, stream, temperature, top_p, top_k, max_tokens, stop, seed, logit_bias, penalties, n per request')
    .option('--guided <kind>', `guided decoding on every request: ${GUIDED_BENCH_KINDS.join('|')} (vLLM's guided_json/guided_regex/guided_choice; compare TPOT with a run without)`)
    .option('--soak-out <file>', "sample the server's RSS, V8 heap and KV usage from /metrics into FILE (.csv or JSON)")
    .option('--sample-interval <s>', 'seconds between /metrics samples', '2')
    .option('--warmup <s>', 'seconds left out of the memory slopes (default: min(60, duration / 5))')
    .option('--json', 'print the results as JSON')
    .action(async (opts: BenchServeOptions) => {
      const levels = opts.concurrency.split(',').map((s) => intOpt('concurrency', s.trim())!);
      if (levels.length === 0) throw new UsageError('--concurrency needs at least one value');
      const inputWords = intOpt('input-len', opts.inputLen)!;
      const outputLen = intOpt('output-len', opts.outputLen)!;
      const seed = intOpt('seed', opts.seed, 0)!;
      const durationS = numOpt('duration', opts.duration, 0, Infinity, true);
      const abortRate = numOpt('abort-rate', opts.abortRate, 0, 1) ?? 0;
      const sampleS = numOpt('sample-interval', opts.sampleInterval, 0.1)!;
      const warmupS = numOpt('warmup', opts.warmup, 0) ?? Math.min(60, (durationS ?? 0) / 5);
      const randomSampling = opts.randomSampling === true;
      if (opts.guided !== undefined && !GUIDED_BENCH_KINDS.includes(opts.guided as GuidedBenchKind)) throw new UsageError(`--guided must be one of ${GUIDED_BENCH_KINDS.join(', ')}`);
      if (opts.guided !== undefined && randomSampling) throw new UsageError('--guided applies to the fixed requests, not with --random-sampling');
      const guided = (opts.guided ?? null) as GuidedBenchKind | null;
      const numSpec = parseSpeculative(opts);
      // Set by measure() on the measured server (closures hide assignments from narrowing, hence the holder).
      const soakRef: { sampler: SoakSampler | null } = { sampler: null };
      let url = opts.url?.replace(/\/+$/, '');
      let server: Awaited<ReturnType<typeof spawnServer>> | null = null;
      const measure = async (target: string, onLevel?: (c: number, phase: 'before' | 'after') => Promise<void>): Promise<LoadResult[]> => {
        // Warm-up (JIT, page-in): a few requests that are not measured.
        await runLoad({ url: target, apiKey: opts.apiKey, concurrency: 2, numPrompts: 2, inputWords, outputLen: 8, seed: seed + 1000, guided });
        if (opts.soakOut && onLevel) soakRef.sampler = new SoakSampler(target, opts.apiKey, sampleS * 1000).start();
        const out: LoadResult[] = [];
        for (const c of levels) {
          const numPrompts = intOpt('num-prompts', opts.numPrompts) ?? Math.max(4, 2 * c);
          if (!opts.json) process.stderr.write(`seekd bench: concurrency ${c}, ${durationS !== undefined ? `${durationS} s` : `${numPrompts} requests`}${onLevel && numSpec > 0 ? ', speculative' : ''}...\n`);
          await onLevel?.(c, 'before');
          out.push(await runLoad({ url: target, apiKey: opts.apiKey, concurrency: c, numPrompts, inputWords, outputLen, seed, durationS, abortRate, randomSampling, guided }));
          await onLevel?.(c, 'after');
        }
        return out;
      };
      let baseline: LoadResult[] | null = null;
      let args: string[] = [];
      if (!url) {
        args = ['--backend', opts.backend, '--threads', opts.threads, '--max-num-seqs', String(Math.max(intOpt('max-num-seqs', opts.maxNumSeqs)!, ...levels)),
          '--max-num-batched-tokens', opts.maxNumBatchedTokens, '--max-waiting', opts.maxWaiting];
        if (opts.model) args.push('--model', opts.model);
        if (opts.maxModelLen) args.push('--max-model-len', opts.maxModelLen);
        if (opts.quantize) args.push('--quantize', opts.quantize);
        if (numSpec > 0) {
          // The same server without speculation first: the speed-up's baseline.
          if (!opts.json) process.stderr.write('seekd bench: starting seekd serve without speculative decoding (baseline)...\n');
          const base = await spawnServer(args);
          try {
            baseline = await measure(base.url);
          } finally {
            await base.stop();
          }
          args.push('--speculative', 'mtp', '--num-speculative-tokens', String(numSpec));
        }
        if (!opts.json) process.stderr.write('seekd bench: starting seekd serve...\n');
        server = await spawnServer(args);
        url = server.url;
      }
      try {
        const specLevels: SpecLevel[] = [];
        let before: Awaited<ReturnType<typeof specCounters>> = null;
        const results = await measure(url, async (c, phase) => {
          const now = await specCounters(url!, opts.apiKey);
          if (phase === 'before') { before = now; return; }
          if (!now || !before) return;
          const steps = now.steps - before.steps, drafted = now.drafted - before.drafted, accepted = now.accepted - before.accepted;
          specLevels.push({ concurrency: c, steps, drafted, accepted, acceptanceRate: drafted > 0 ? accepted / drafted : 0, meanTokensPerStep: steps > 0 ? 1 + accepted / steps : 1, speedup: null, tpotSpeedup: null });
        });
        if (baseline) {
          specLevels.forEach((l, i) => {
            const b = baseline![i]!, r = results[i]!;
            l.speedup = b.outputThroughput > 0 ? r.outputThroughput / b.outputThroughput : null;
            l.tpotSpeedup = r.tpotMs.p50 > 0 ? b.tpotMs.p50 / r.tpotMs.p50 : null;
          });
        }
        let soak: SoakSummary | null = null;
        const sampler = soakRef.sampler;
        if (sampler) {
          await sampler.stop();
          soak = summarize(sampler.samples, warmupS);
          writeSoak(opts.soakOut!, sampler.samples, soak, { bench: 'serve', durationS: durationS ?? null, abortRate, randomSampling, results });
        }
        if (opts.json) {
          const speculative = specLevels.length > 0 ? { method: 'mtp', numSpeculativeTokens: numSpec || null, levels: specLevels, baseline } : null;
          process.stdout.write(JSON.stringify({ bench: 'serve', url: opts.url ?? null, inputWords, outputLen, durationS: durationS ?? null, abortRate, randomSampling, guided, results, speculative, soak }, null, 2) + '\n');
        } else {
          const head = ['concurrency', 'ok/total', 'req/s', 'out tok/s', 'x vs first', 'TTFT ms p50/p90/p99', 'TPOT ms p50/p90/p99', 'ITL ms p50/p90/p99'];
          const rows = [head, ...results.map((r) => fmt(r, results[0]!))];
          const w = head.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
          for (const r of rows) process.stdout.write(r.map((x, i) => x.padStart(w[i]!)).join('  ') + '\n');
          for (const r of results) {
            if (r.aborted || r.rejected || r.failed) process.stdout.write(`concurrency ${r.concurrency}: ${r.sent} sent, ${r.aborted} aborted by the client, ${r.rejected} rejected (429/503), ${r.failed} failed\n`);
            if (r.errors.length) process.stdout.write(`errors at concurrency ${r.concurrency}: ${r.errors.join('; ')}\n`);
          }
          for (const l of specLevels) {
            const sp = l.speedup === null ? '' : `, output tok/s x${l.speedup.toFixed(2)} and TPOT p50 x${l.tpotSpeedup?.toFixed(2) ?? '-'} vs without speculation`;
            process.stdout.write(`speculative, concurrency ${l.concurrency}: ${l.accepted}/${l.drafted} drafts accepted (${(100 * l.acceptanceRate).toFixed(1)}%), ${l.meanTokensPerStep.toFixed(2)} tokens per verify step${sp}\n`);
          }
          if (soak) for (const l of soakLines(soak)) process.stdout.write(l + '\n');
        }
        if (results.some((r) => r.completed === 0)) process.exitCode = 1;
        // A soak must see no failure but the intended 429/503, and every KV block free once idle.
        if (durationS !== undefined && results.some((r) => r.failed > 0)) process.exitCode = 1;
        if (soak && soak.kvUsageIdle !== 0) {
          process.stderr.write(`seekd bench: KV usage is ${(soak.kvUsageIdle * 100).toFixed(2)}% with the server idle (blocks leaked)\n`);
          process.exitCode = 1;
        }
      } finally {
        soakRef.sampler?.dispose();
        await server?.stop();
      }
    });
}
