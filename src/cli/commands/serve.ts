// `seekd serve`: the OpenAI-compatible server. Without --model it serves the built-in model (random
// weights, generated on first run). Binds 127.0.0.1 unless --host says otherwise. SIGTERM/SIGINT:
// stop admitting (503), drain in-flight requests (up to --drain-timeout), exit 0.
import type { Command } from 'commander';
import { backendNames } from '../../kernels/index.ts';
import { Llm } from '../../engine/llm.ts';
import { startServer } from '../../server/http.ts';
import { UsageError } from '../errors.ts';
import { defaultBackend, parseQuantize, QUANTIZE_HELP } from '../model-args.ts';
import { ProgressBar } from '../progress.ts';
import { epOptions, parseEp, startEpRanks, type EpCliOptions } from '../ep-args.ts';

export interface EngineCliOptions {
  model?: string;
  servedModelName?: string;
  backend: string;
  threads: string;
  maxNumSeqs: string;
  maxModelLen?: string;
  maxNumBatchedTokens: string;
  maxWaiting: string;
  quantize?: string;
  speculative?: string;
  numSpeculativeTokens?: string;
  // --ep and its options (serve and run; see ep-args.ts)
  ep?: EpCliOptions['ep'];
  epMode?: string;
  microBatches?: string;
  expertLoads?: string;
  redundantExperts?: string;
}

/** The validated --ep options of an engine command (null without --ep); usage errors before anything loads. */
export function parseEngineEp(opts: EngineCliOptions): ReturnType<typeof parseEp> {
  const ep = parseEp(opts);
  // The expert-parallel ranks read their experts as stored (parallel/deepep/ep/experts.ts).
  if (ep && opts.quantize !== undefined) throw new UsageError('--quantize cannot be combined with --ep yet (the expert ranks load experts as stored)');
  return ep;
}

/** engineOptions plus the expert-parallel options (serve, run). */
export function engineEpOptions(cmd: Command): Command {
  return epOptions(engineOptions(cmd));
}

export function intOpt(name: string, v: string | undefined, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

/** The options every engine-backed command shares (serve, run, bench serve). */
export function engineOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'model directory (HF layout); default: the built-in model (seekd-builtin, trained by seekd)')
    .option('--served-model-name <name>', 'model id reported by the API (default: directory name or seekd-builtin)')
    .option('--backend <name>', `kernel backend (${backendNames().join(', ')})`, defaultBackend())
    .option('--threads <n>', 'kernel threads', '1')
    .option('--max-num-seqs <n>', 'sequences in the running batch at most', '32')
    .option('--max-model-len <n>', 'context limit in tokens (default: min(config, 4096))')
    .option('--max-num-batched-tokens <n>', 'tokens computed per step at most (chunked prefill)', '512')
    .option('--max-waiting <n>', 'waiting requests before new ones get 429', '256')
    .option('--quantize <fmt>', QUANTIZE_HELP)
    .option('--speculative <method>', "speculative decoding: 'mtp' (the checkpoint's MTP module drafts, the model verifies)")
    .option('--num-speculative-tokens <k>', 'tokens drafted per step with --speculative (default 1)');
}

/** --speculative mtp [--num-speculative-tokens K] -> K (0 without --speculative); usage errors first. */
export function parseSpeculative(opts: { speculative?: string; numSpeculativeTokens?: string; ep?: unknown }): number {
  if (opts.speculative !== undefined && opts.speculative !== 'mtp') throw new UsageError(`--speculative must be mtp, got '${opts.speculative}'`);
  if (opts.numSpeculativeTokens !== undefined && opts.speculative === undefined) throw new UsageError('--num-speculative-tokens needs --speculative mtp');
  if (opts.speculative === undefined) return 0;
  if (opts.ep !== undefined) throw new UsageError('--speculative cannot be combined with --ep yet (the expert ranks do not hold the MTP module\'s experts)');
  return intOpt('num-speculative-tokens', opts.numSpeculativeTokens ?? '1')!;
}

export async function loadLlm(opts: EngineCliOptions, quiet = false): Promise<Llm> {
  if (!backendNames().includes(opts.backend)) throw new UsageError(`--backend must be one of ${backendNames().join(', ')}, got '${opts.backend}'`);
  const quantize = parseQuantize(opts.quantize);
  const ep = parseEngineEp(opts);
  const numSpeculativeTokens = parseSpeculative(opts);
  const bar = quiet ? null : new ProgressBar('Loading weights');
  return Llm.load({
    model: opts.model,
    modelId: opts.servedModelName,
    backend: opts.backend,
    threads: intOpt('threads', opts.threads),
    maxNumSeqs: intOpt('max-num-seqs', opts.maxNumSeqs),
    maxModelLen: intOpt('max-model-len', opts.maxModelLen),
    maxNumBatchedTokens: intOpt('max-num-batched-tokens', opts.maxNumBatchedTokens),
    maxWaiting: intOpt('max-waiting', opts.maxWaiting, 0),
    quantize,
    numSpeculativeTokens,
    // Every runner (the first and any rebuilt after a failure) starts its own expert ranks; its dispose stops them.
    routedExperts: ep ? (dir) => startEpRanks(dir, ep) : undefined,
    onStatus: quiet ? undefined : (m) => process.stderr.write(`seekd: ${m}\n`),
    onProgress: bar ? (d, t) => bar.update(d, t) : undefined,
  });
}

interface ServeOptions extends EngineCliOptions {
  host: string;
  port: string;
  apiKey?: string;
  defaultMaxTokens: string;
  drainTimeout: string;
  maxBodyBytes: string;
  maxHeaderBytes: string;
  requestTimeout: string;
  allowedOrigins?: string;
}

/** --allowed-origins a,b: exact origins (scheme://host[:port]) or '*'; '*' is refused with an API key. */
export function parseAllowedOrigins(v: string | undefined, apiKey: string | null): string[] | null {
  if (v === undefined) return null;
  const list = v.split(',').map((o) => o.trim()).filter((o) => o.length > 0);
  if (list.length === 0) throw new UsageError('--allowed-origins needs at least one origin');
  for (const o of list) {
    if (o === '*') continue;
    let u: URL;
    try {
      u = new URL(o);
    } catch {
      throw new UsageError(`--allowed-origins: '${o}' is not an origin (scheme://host[:port])`);
    }
    if (u.origin !== o || !/^https?:$/.test(u.protocol)) throw new UsageError(`--allowed-origins: '${o}' is not an origin (scheme://host[:port], no path or trailing slash)`);
  }
  if (list.includes('*') && apiKey) throw new UsageError("--allowed-origins '*' is refused with --api-key: list the origins that may call the API");
  return list;
}

export function register(program: Command): void {
  engineEpOptions(program.command('serve').description('serve an OpenAI-compatible API (and a chat page at /)'))
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('--port <n>', 'port', '8000')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on every route but /health (env SEEKD_API_KEY)')
    .option('--default-max-tokens <n>', 'max_tokens for requests that give none', '512')
    .option('--drain-timeout <s>', 'seconds to let in-flight requests finish on SIGTERM', '30')
    .option('--max-body-bytes <n>', 'largest request body (413 past it)', String(4 * 1024 * 1024))
    .option('--max-header-bytes <n>', 'largest request head (431 past it)', String(16 * 1024))
    .option('--request-timeout <s>', 'seconds a client has to send its whole request (408 past it)', '60')
    .option('--allowed-origins <list>', "origins allowed to call the API from a browser (CORS), comma-separated; '*' only without --api-key")
    .action(async (opts: ServeOptions) => {
      const port = intOpt('port', opts.port, 0)!;
      parseQuantize(opts.quantize); // a bad value is a usage error before the server starts
      const ep = parseEngineEp(opts);
      const apiKey = opts.apiKey ?? process.env.SEEKD_API_KEY ?? null;
      const srv = await startServer({
        host: opts.host, port, apiKey,
        defaultMaxTokens: intOpt('default-max-tokens', opts.defaultMaxTokens),
        maxBodyBytes: intOpt('max-body-bytes', opts.maxBodyBytes),
        maxHeaderBytes: intOpt('max-header-bytes', opts.maxHeaderBytes, 1024),
        requestTimeoutMs: intOpt('request-timeout', opts.requestTimeout)! * 1000,
        allowedOrigins: parseAllowedOrigins(opts.allowedOrigins, apiKey),
      });
      let stopping = false;
      const stop = async (sig: string) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`seekd: ${sig}: draining in-flight requests\n`);
        await srv.shutdown(Number(opts.drainTimeout) * 1000);
        await srv.state.llm?.close();
        process.stderr.write('seekd: stopped\n');
        process.exit(0);
      };
      process.on('SIGTERM', () => void stop('SIGTERM'));
      process.on('SIGINT', () => void stop('SIGINT'));
      process.stderr.write(`seekd: listening on ${srv.url} (loading model; /health answers 503 until ready)\n`);
      let llm: Llm;
      try {
        llm = await loadLlm(opts);
      } catch (e) {
        // The listener would keep the process alive (answering 503 "loading" forever): close it, then fail.
        srv.server.close();
        srv.server.closeAllConnections();
        throw e;
      }
      // A runner failure fails the requests in flight and reloads the model; if that fails too, exit
      // non-zero so that a supervisor restarts the server (in-flight requests already got their errors).
      llm.engine.onHealthChange((h, err) => {
        if (h === 'recovering') process.stderr.write(`seekd: model runner failed: ${err?.name}: ${err?.message}; reloading (/health: recovering)\n`);
        else if (h === 'ok') process.stderr.write('seekd: model runner reloaded; serving again\n');
        else if (h === 'failed' && !stopping) {
          stopping = true;
          process.stderr.write(`seekd: model runner failed and cannot be restarted: ${err?.name}: ${err?.message}; exiting\n`);
          void srv.shutdown(1_000).finally(() => process.exit(1));
        }
      });
      srv.setLlm(llm);
      process.stderr.write(`seekd: serving ${llm.modelId} at ${srv.url}/v1 (chat page: ${srv.url}/, ${opts.backend} backend${ep ? `, routed experts on ${ep.ranks} expert-parallel ranks` : ''})\n`);
      if (!opts.model) process.stderr.write('seekd: note: the built-in model has RANDOM weights; its answers are meaningless\n');
    });
}
