// Runs the app on node:http (@hono/node-server), with graceful shutdown: stop admitting (new
// requests get 503, /health says draining), let in-flight requests finish up to a deadline, abort
// the rest, close the listener, resolve.
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import type { Llm } from '../engine/llm.ts';
import { createApp, type ServerOptions, type ServerState } from './app.ts';
import { ServerMetrics } from './metrics.ts';

export interface StartOptions extends ServerOptions {
  host?: string;
  port?: number;
  /** Largest request head (request line + headers); node answers 431 past it. Default 16 KiB. */
  maxHeaderBytes?: number;
  /** Time a client has to send its headers (node answers 408 and closes). Default 15 s. */
  headersTimeoutMs?: number;
  /** Time a client has to send its whole request, body included (408). Default 60 s. Responses (streams) are not limited. */
  requestTimeoutMs?: number;
}

export interface RunningServer {
  readonly url: string;
  readonly state: ServerState;
  readonly server: Server;
  /** Attaches the loaded model (the server answers 503 "Loading model" until then). */
  setLlm(llm: Llm): void;
  /** Graceful shutdown; resolves when every request has finished (or was aborted at the deadline). */
  shutdown(deadlineMs?: number): Promise<void>;
}

export async function startServer(opts: StartOptions = {}, llm: Llm | null = null): Promise<RunningServer> {
  const state: ServerState = { llm: null, draining: false, metrics: null };
  const app = createApp(state, opts);
  const server = await new Promise<Server>((resolve, reject) => {
    const requestTimeout = opts.requestTimeoutMs ?? 60_000;
    const headersTimeout = Math.min(opts.headersTimeoutMs ?? 15_000, requestTimeout);
    const serverOptions = {
      maxHeaderSize: opts.maxHeaderBytes ?? 16 * 1024,
      headersTimeout,
      requestTimeout,
      // How often node checks those deadlines (its default, 30 s, would let short ones overrun).
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(headersTimeout / 4))),
    };
    const s = serve({ fetch: app.fetch, hostname: opts.host ?? '127.0.0.1', port: opts.port ?? 8000, serverOptions }, () => resolve(s as Server));
    (s as Server).once('error', reject);
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const setLlm = (l: Llm) => {
    state.metrics = new ServerMetrics(l.engine, l.modelId);
    state.llm = l;
  };
  if (llm) setLlm(llm);
  let closing: Promise<void> | null = null;
  return {
    url: `http://${host}:${addr.port}`,
    state,
    server,
    setLlm,
    shutdown(deadlineMs = 30_000) {
      closing ??= (async () => {
        state.draining = true;
        const l = state.llm;
        if (l) {
          let timer: NodeJS.Timeout | undefined;
          const deadline = new Promise<void>((r) => { timer = setTimeout(() => { l.engine.abortAll(); r(); }, deadlineMs); });
          await Promise.race([l.engine.drain(), deadline]);
          clearTimeout(timer);
        }
        // Let the last bytes of finished streams flush before closing idle keep-alive sockets.
        await new Promise((r) => setTimeout(r, 50));
        await new Promise<void>((r) => { server.close(() => r()); server.closeIdleConnections(); });
      })();
      return closing;
    },
  };
}
