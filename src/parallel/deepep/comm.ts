// The process-group abstraction the DeepEP port runs on (DeepEP takes a torch.distributed group:
// https://github.com/deepseek-ai/DeepEP/blob/main/deep_ep/buffer.py). Two transports implement it:
// worker-thread ranks over SharedArrayBuffer rings (shm.ts, the NVLink analogue) and process ranks over
// TCP WebSockets (tcp.ts, the RDMA analogue). Both only move tagged byte messages between ranks; the
// collectives below are built once on top of send/recv.
//
// Tags: every collective takes the next tag from a per-communicator counter, so ranks that issue their
// collectives in the same order (the usual SPMD contract) agree on tags without talking. Receives are
// matched by (source, tag), so two operations may be in flight at once (micro-batch overlap).
import { CommClosedError, RankFailedError, type RankFailureReason } from './errors.ts';

export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** How long a receive (or a send blocked on a full buffer) waits for a silent peer before failing. */
  readonly timeoutMs: number;
  /** The tag of the next collective; every rank must call this in the same order. */
  nextTag(): number;
  /** Hands a message (the concatenation of `parts`) to the transport; resolves once it is out of the caller's hands. */
  send(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void>;
  /** timeoutMs: override of the communicator's timeout for this receive; 0 waits without limit. */
  recv(src: number, tag: number, op: string, timeoutMs?: number): Promise<Uint8Array>;
  /** Receives one message with `tag` from each rank in `srcs`; fails as a whole on the first failure. */
  recvAll(srcs: readonly number[], tag: number, op: string, timeoutMs?: number): Promise<Uint8Array[]>;
  /** parts[d] goes to rank d (parts[rank] to itself); returns what each rank sent here, indexed by source. */
  allToAllV(parts: readonly (readonly Uint8Array[])[], op?: string): Promise<Uint8Array[]>;
  /** Every rank's Int32Array (same length everywhere), indexed by rank. */
  allGatherInt32(values: Int32Array, op?: string): Promise<Int32Array[]>;
  barrier(op?: string): Promise<void>;
  /** Fails pending work with CommClosedError and releases the transport (workers keep running). */
  close(): Promise<void>;
}

/**
 * Blocking operations for code that cannot yield to the event loop (the model's synchronous forward
 * pass calling an MoE executor). Only the shared-memory transport offers them (Atomics.wait); a peer's
 * death is then noticed through its status word or the timeout.
 */
export interface SyncCommunicator extends Communicator {
  /** Queues a message: copies what fits into the peer's buffer now; the rest moves during later waits. */
  isend(dest: number, tag: number, parts: readonly Uint8Array[], op: string): void;
  /** Blocks until one message with `tag` arrived from each of `srcs` and every queued send has left. */
  waitAll(srcs: readonly number[], tag: number, op: string): Uint8Array[];
}

export function isSyncCommunicator(c: Communicator): c is SyncCommunicator {
  return typeof (c as Partial<SyncCommunicator>).waitAll === 'function';
}

interface Waiter {
  readonly src: number;
  readonly op: string;
  resolve(msg: Uint8Array): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
}

const key = (src: number, tag: number): string => `${src}:${tag}`;

/**
 * Control message a rank sends to its live peers when it closes after a failure: [cause rank, reason].
 * Without it, a survivor that closes first looks like a new failure to the others (its connection drops),
 * and they would blame it instead of the rank that actually failed. User tags are positive (nextTag).
 */
export const LEAVE_TAG = -1;
const REASONS: readonly RankFailureReason[] = ['exited', 'timeout', 'closed', 'desync'];

/** Shared receive matching, failure bookkeeping and the collectives; subclasses move the bytes. */
export abstract class BaseCommunicator implements Communicator {
  #seq = 0;
  readonly #inbox = new Map<string, Uint8Array[]>();
  readonly #waiters = new Map<string, Waiter[]>();
  readonly #failed = new Map<number, RankFailureReason>();
  /** Peers that left because of another rank's failure: peer -> the rank to blame. */
  readonly #blame = new Map<number, number>();
  /** The first failure this rank saw (announced to the live peers on close). */
  #cause: { rank: number; reason: RankFailureReason } | null = null;
  #closed = false;

  constructor(readonly rank: number, readonly size: number, readonly timeoutMs: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`group size must be a positive integer, got ${size}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new RangeError(`rank ${rank} outside [0, ${size})`);
    if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be > 0, got ${timeoutMs}`);
  }

  get closed(): boolean {
    return this.#closed;
  }

  nextTag(): number {
    this.#seq = (this.#seq + 1) & 0x7fffffff;
    return this.#seq;
  }

  /** Transport hook: move one whole message to `dest` (never called for dest === rank). */
  protected abstract transmit(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void>;
  /** Transport hook: release resources. */
  protected abstract shutdown(): Promise<void>;

  protected failureOf(rank: number): RankFailureReason | undefined {
    return this.#failed.get(rank);
  }

  /** The first failure this rank observed, if any. */
  protected get failureCause(): { rank: number; reason: RankFailureReason } | null {
    return this.#cause;
  }

  /** The error for an operation that needed `rank`: names the rank to blame when `rank` left because of another. */
  protected failedError(rank: number, op: string, reason: RankFailureReason, detail = ''): RankFailedError {
    const blamed = this.#blame.get(rank);
    if (blamed === undefined || blamed === rank) return new RankFailedError(rank, op, reason, detail);
    return new RankFailedError(blamed, op, reason, `rank ${rank} left the group after it${detail ? `; ${detail}` : ''}`);
  }

  #noteCause(rank: number, reason: RankFailureReason): void {
    if (!this.#cause) this.#cause = { rank, reason };
  }

  async send(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    this.#checkPeer(dest);
    if (this.#closed) throw new CommClosedError(op);
    if (dest === this.rank) {
      this.deliver(this.rank, tag, concat(parts));
      return;
    }
    const reason = this.#failed.get(dest);
    if (reason) throw this.operationFailed(this.failedError(dest, op, reason));
    try {
      await this.transmit(dest, tag, parts, op);
    } catch (e) {
      // A send that finds the peer gone (EPIPE, a connection already closing) is a failure of that peer
      // like a closed connection: record it (and make it this rank's cause), or a close right after would
      // announce no cause and the other survivors could blame this rank instead of `dest`.
      if (e instanceof RankFailedError) this.peerFailed(dest, e.reason, true);
      throw e;
    }
  }

  recv(src: number, tag: number, op: string, timeoutMs = this.timeoutMs): Promise<Uint8Array> {
    return this.recvAll([src], tag, op, timeoutMs).then((m) => m[0]!);
  }

  recvAll(srcs: readonly number[], tag: number, op: string, timeoutMs = this.timeoutMs): Promise<Uint8Array[]> {
    for (const s of srcs) this.#checkPeer(s);
    return new Promise((resolve, reject) => {
      const out: Uint8Array[] = new Array(srcs.length);
      let remaining = srcs.length;
      let done = false;
      const mine: Waiter[] = [];
      const finish = (err: Error | null): void => {
        if (done) return;
        done = true;
        for (const w of mine) this.#dropWaiter(w, tag);
        if (err) reject(err);
        else resolve(out);
      };
      if (this.#closed) return finish(new CommClosedError(op));
      if (remaining === 0) return finish(null);
      srcs.forEach((src, i) => {
        if (done) return;
        const queued = this.#inbox.get(key(src, tag));
        if (queued && queued.length > 0) {
          out[i] = queued.shift()!;
          if (queued.length === 0) this.#inbox.delete(key(src, tag));
          if (--remaining === 0) finish(null);
          return;
        }
        const reason = this.#failed.get(src);
        if (reason) return finish(this.operationFailed(this.failedError(src, op, reason)));
        const w: Waiter = {
          src, op,
          resolve: (m) => {
            this.#dropWaiter(w, tag);
            out[i] = m;
            if (--remaining === 0) finish(null);
          },
          reject: (e) => finish(e),
          // Without a limit, a timer that never fires still holds the event loop: the thread transport
          // waits with Atomics.waitAsync, which does not, and a rank whose only pending work is this
          // receive would otherwise exit (code 13, unsettled top-level await) instead of waiting.
          timer: timeoutMs > 0 ? setTimeout(() => {
            this.#noteCause(src, 'timeout');
            finish(new RankFailedError(src, op, 'timeout', `no message within ${timeoutMs} ms`));
          }, timeoutMs) : setInterval(() => undefined, 2 ** 30),
        };
        mine.push(w);
        const k = key(src, tag);
        const list = this.#waiters.get(k);
        if (list) list.push(w);
        else this.#waiters.set(k, [w]);
      });
    });
  }

  #dropWaiter(w: Waiter, tag: number): void {
    clearTimeout(w.timer);
    const k = key(w.src, tag);
    const list = this.#waiters.get(k);
    if (!list) return;
    const i = list.indexOf(w);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#waiters.delete(k);
  }

  /** Takes a queued message without waiting (sync transports poll with this). */
  protected takeQueued(src: number, tag: number): Uint8Array | undefined {
    const k = key(src, tag);
    const q = this.#inbox.get(k);
    if (!q || q.length === 0) return undefined;
    const m = q.shift()!;
    if (q.length === 0) this.#inbox.delete(k);
    return m;
  }

  /** Transport callback: a whole message arrived. */
  protected deliver(src: number, tag: number, msg: Uint8Array): void {
    if (tag === LEAVE_TAG) return this.#peerLeft(src, msg);
    const k = key(src, tag);
    const list = this.#waiters.get(k);
    if (list && list.length > 0) {
      list[0]!.resolve(msg);
      return;
    }
    const q = this.#inbox.get(k);
    if (q) q.push(msg);
    else this.#inbox.set(k, [msg]);
  }

  /**
   * Transport callback: `rank` is gone; everything waiting on it fails now, later calls fail at once.
   * It becomes this rank's failure cause (announced on close) only when an operation fails over it:
   * `byOperation` (the caller's own operation failed), or a waiter rejected here. A peer that simply
   * exits after its last operation (the end of a run) is no failure, and announcing it would make the
   * other ranks fail waits on messages that peer already sent and that are still in its ring.
   */
  protected peerFailed(rank: number, reason: RankFailureReason, byOperation = false): void {
    if (this.#closed) return;
    if (byOperation) this.#noteCause(rank, reason);
    if (this.#failed.has(rank)) return;
    this.#failed.set(rank, reason);
    for (const list of [...this.#waiters.values()]) {
      for (const w of [...list]) if (w.src === rank) w.reject(this.operationFailed(this.failedError(rank, w.op, reason)));
    }
  }

  /** Records the failure an operation ends with as this rank's cause (first one wins) and returns it. */
  protected operationFailed(e: RankFailedError): RankFailedError {
    this.#noteCause(e.rank, e.reason);
    return e;
  }

  /** `src` announced it is leaving because rank `cause` failed: both are gone, and `cause` is to blame. */
  #peerLeft(src: number, msg: Uint8Array): void {
    if (this.#closed || this.#failed.has(src)) return;
    const v = msg.byteLength === 8 ? new Int32Array(msg.slice().buffer) : null;
    const cause = v && v[0]! >= 0 && v[0]! < this.size && v[0] !== this.rank ? v[0]! : src;
    const reason = (v && REASONS[v[1]!]) || 'closed';
    if (cause !== src) this.peerFailed(cause, reason);
    this.#blame.set(src, cause);
    this.peerFailed(src, reason);
  }

  /** Best effort: tells every live peer which failure this rank is leaving over (bounded wait). */
  async #announceLeave(): Promise<void> {
    const c = this.#cause;
    if (!c) return;
    const body = new Uint8Array(new Int32Array([c.rank, REASONS.indexOf(c.reason)]).buffer);
    const sends: Promise<void>[] = [];
    for (let r = 0; r < this.size; r++) {
      if (r === this.rank || this.#failed.has(r)) continue;
      sends.push(this.transmit(r, LEAVE_TAG, [body], 'close').catch(() => undefined));
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(sends), new Promise<void>((res) => (timer = setTimeout(res, 1_000)))]);
    clearTimeout(timer);
  }

  async allToAllV(parts: readonly (readonly Uint8Array[])[], op = 'all_to_all_v'): Promise<Uint8Array[]> {
    if (parts.length !== this.size) throw new RangeError(`allToAllV needs ${this.size} destinations, got ${parts.length}`);
    const tag = this.nextTag();
    const srcs = Array.from({ length: this.size }, (_, i) => i);
    const received = this.recvAll(srcs, tag, op);
    // Send in a rotated order (rank+1, rank+2, ...) so that not everybody writes to rank 0 first.
    const sends = srcs.map((i) => (this.rank + i) % this.size).map((d) => this.send(d, tag, parts[d]!, op));
    const [msgs] = await Promise.all([received, Promise.all(sends)]);
    return msgs;
  }

  async allGatherInt32(values: Int32Array, op = 'all_gather'): Promise<Int32Array[]> {
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    const msgs = await this.allToAllV(Array.from({ length: this.size }, () => [bytes]), op);
    return msgs.map((m, r) => {
      if (m.byteLength !== values.byteLength) throw new RangeError(`allGatherInt32: rank ${r} sent ${m.byteLength / 4} values, expected ${values.length}`);
      return int32View(m);
    });
  }

  async barrier(op = 'barrier'): Promise<void> {
    await this.allToAllV(Array.from({ length: this.size }, () => []), op);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#announceLeave();
    this.#closed = true;
    for (const list of [...this.#waiters.values()]) for (const w of [...list]) w.reject(new CommClosedError(w.op));
    this.#inbox.clear();
    await this.shutdown();
  }

  #checkPeer(r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.size) throw new RangeError(`rank ${r} outside [0, ${this.size})`);
  }
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/** An Int32Array over a message; copies when the bytes are not 4-aligned. */
export function int32View(m: Uint8Array, byteOffset = 0, length = (m.byteLength - byteOffset) >> 2): Int32Array {
  const off = m.byteOffset + byteOffset;
  if (off % 4 === 0) return new Int32Array(m.buffer, off, length);
  return new Int32Array(m.slice(byteOffset, byteOffset + length * 4).buffer);
}
