// Process ranks over TCP: the RDMA analogue of DeepEP's internode path. One WebSocket connection per
// rank pair (the `ws` library does the message framing); rank r dials every rank below it and accepts
// the ranks above it, so the same code runs across hosts given a table of `host:port` addresses.
// A message is one binary WebSocket message: [tag int32 LE][bytes]. A closed or broken connection
// makes every operation waiting on that peer fail with RankFailedError (reason 'closed').
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { AddressInfo } from 'node:net';
import { BaseCommunicator, concat } from './comm.ts';
import { CommClosedError, RankFailedError } from './errors.ts';

export interface TcpListenOptions {
  rank: number;
  size: number;
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** 0 picks a free port (default). */
  port?: number;
  timeoutMs?: number;
}

const MAX_PAYLOAD = 2 ** 32 - 1;

export class TcpCommunicator extends BaseCommunicator {
  readonly #server: WebSocketServer;
  readonly #peers: (WebSocket | null)[];
  readonly #host: string;
  #shuttingDown = false;

  /** Called when a higher rank's connection is attached (connect() waiting for the mesh). */
  #onAccept: (() => void) | null = null;

  private constructor(rank: number, size: number, timeoutMs: number, server: WebSocketServer, host: string) {
    super(rank, size, timeoutMs);
    this.#server = server;
    this.#host = host;
    this.#peers = new Array(size).fill(null);
    // Accept from the start, not from connect(): a faster peer may dial this rank before it has called
    // connect() (each rank gets the address table at its own pace). Such a connection used to be
    // accepted by the server with nobody listening: the peer believed it was connected, this rank
    // waited for it until the connect timeout, and the peer's messages were lost.
    server.on('connection', (ws, req) => {
      const from = Number(new URL(req.url ?? '/', 'ws://x').searchParams.get('rank'));
      if (!Number.isInteger(from) || from <= this.rank || from >= this.size || this.#peers[from]) {
        ws.close(1008, 'unexpected rank');
        return;
      }
      this.#attach(from, ws);
      this.#onAccept?.();
    });
  }

  /** Step 1: listen. Exchange `address` with the other ranks (any way you like), then call connect(). */
  static async listen(opts: TcpListenOptions): Promise<TcpCommunicator> {
    const host = opts.host ?? '127.0.0.1';
    const server = new WebSocketServer({ host, port: opts.port ?? 0, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
    await new Promise<void>((res, rej) => {
      server.once('listening', res);
      server.once('error', rej);
    });
    return new TcpCommunicator(opts.rank, opts.size, opts.timeoutMs ?? 30_000, server, host);
  }

  /** `host:port` this rank listens on. */
  get address(): string {
    const a = this.#server.address() as AddressInfo;
    return `${this.#host.includes(':') ? `[${this.#host}]` : this.#host}:${a.port}`;
  }

  /** Step 2: build the full mesh. addresses[r] is rank r's `host:port`. */
  async connect(addresses: readonly string[]): Promise<void> {
    if (addresses.length !== this.size) throw new RangeError(`connect needs ${this.size} addresses, got ${addresses.length}`);
    const deadline = Date.now() + this.timeoutMs;
    const missing = () => this.#peers.findIndex((p, r) => r > this.rank && p === null);
    const accepted = new Promise<void>((resolve, reject) => {
      if (missing() < 0) return resolve();
      const timer = setTimeout(() => {
        this.#onAccept = null;
        reject(new RankFailedError(missing(), 'connect', 'timeout', 'peer never connected'));
      }, this.timeoutMs);
      this.#onAccept = () => {
        if (missing() >= 0) return;
        clearTimeout(timer);
        this.#onAccept = null;
        resolve();
      };
    });
    const dials = [];
    for (let r = 0; r < this.rank; r++) dials.push(this.#dial(r, addresses[r]!, deadline));
    await Promise.all([accepted, ...dials]);
  }

  async #dial(r: number, address: string, deadline: number): Promise<void> {
    for (;;) {
      try {
        await new Promise<void>((res, rej) => {
          const ws = new WebSocket(`ws://${address}/?rank=${this.rank}`, { maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
          // Attach inside 'open', not after the promise settles: the peer may send the moment it accepts,
          // and a frame that arrived with the handshake response is emitted right after 'open' — one
          // microtask later it would have found no listener and been dropped.
          ws.once('open', () => {
            ws.off('error', rej);
            this.#attach(r, ws);
            res();
          });
          ws.once('error', rej);
        });
        return;
      } catch (e) {
        // The peer may not listen yet (it starts at its own pace): retry until the deadline.
        if (Date.now() > deadline) throw new RankFailedError(r, 'connect', 'timeout', `cannot reach ${address}: ${(e as Error).message}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  }

  #attach(r: number, ws: WebSocket): void {
    this.#peers[r] = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (raw: RawData) => {
      const buf = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
      const tag = buf.readInt32LE(0);
      let body = new Uint8Array(buf.buffer, buf.byteOffset + 4, buf.byteLength - 4);
      // Consumers view messages as Int32/Float32 arrays: keep them 8-byte aligned.
      if (body.byteOffset % 8 !== 0) body = body.slice();
      this.deliver(r, tag, body);
    });
    ws.on('close', () => {
      if (!this.#shuttingDown) this.peerFailed(r, 'closed');
    });
    ws.on('error', () => {
      if (!this.#shuttingDown) this.peerFailed(r, 'closed');
    });
  }

  protected transmit(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    const ws = this.#peers[dest];
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(this.failedError(dest, op, this.failureOf(dest) ?? 'closed'));
    const head = new Uint8Array(new Int32Array([tag]).buffer);
    // Few parts go out as fragments of one message (no gather copy); many small parts are joined first.
    const frames = parts.length > 16 ? [head, concat(parts)] : [head, ...parts.filter((p) => p.byteLength > 0)];
    return new Promise((resolve, reject) => {
      frames.forEach((f, i) => {
        const last = i === frames.length - 1;
        ws.send(f, { binary: true, fin: last }, last ? (err) => (err ? reject(this.closed ? new CommClosedError(op) : this.failedError(dest, op, this.failureOf(dest) ?? 'closed', err.message)) : resolve()) : undefined);
      });
    });
  }

  protected async shutdown(): Promise<void> {
    this.#shuttingDown = true;
    // After a failure the peers were just told why we leave (comm.ts LEAVE_TAG): close with the
    // WebSocket handshake so that message is read before the connection ends (a hard close with
    // unread input would reset the connection and could drop it). Bounded: a stuck peer gets 300 ms.
    if (this.failureCause) {
      await Promise.all(this.#peers.map((ws) => {
        if (!ws || ws.readyState !== WebSocket.OPEN) return undefined;
        return new Promise<void>((res) => {
          const t = setTimeout(res, 300);
          ws.once('close', () => { clearTimeout(t); res(); });
          ws.close(1000, 'leaving after a peer failure');
        });
      }));
    }
    for (const ws of this.#peers) ws?.terminate();
    await new Promise<void>((res) => this.#server.close(() => res()));
  }
}
