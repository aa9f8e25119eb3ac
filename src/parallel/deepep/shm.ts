// Worker-thread ranks over SharedArrayBuffer: the NVLink analogue of DeepEP's intranode path
// (https://github.com/deepseek-ai/DeepEP/blob/main/csrc/kernels/intranode.cu keeps a ring buffer per
// sender/receiver pair in the receiver's memory and signals with head/tail counters). Here every ordered
// pair (src -> dst) owns one single-producer single-consumer byte ring; the sender copies straight into it
// and bumps `written` (Atomics.store + Atomics.notify), the receiver's background reader drains it and
// bumps `read`. Messages are framed as [tag int32][length int32][bytes]. Counters wrap mod 2^32 and the
// capacity is a power of two, so position = counter & (capacity - 1).
//
// Doorbells: besides the per-channel counters, every rank has one doorbell word that anybody bumps
// after writing to it or draining its writes, so a thread blocked synchronously (Atomics.wait, which
// waits on one word) wakes on any progress concerning it.
//
// Liveness: `status[r]` is set by whoever owns rank r's worker (the launcher) when it exits; it notifies
// every counter of r's channels so blocked readers and writers wake, see the status and fail with
// RankFailedError. A peer that hangs without exiting is caught by the timeouts.
import { BaseCommunicator, type SyncCommunicator } from './comm.ts';
import { CommClosedError, RankFailedError } from './errors.ts';

// Atomics.waitAsync exists in Node >= 16 but is typed only from lib es2024 on.
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, t?: number): WaitAsyncResult }).waitAsync;

const WRITTEN = 0;
const READ = 1;
const HEADER_BYTES = 16;

const ALIVE = 0;
const EXITED = 1;

export interface ThreadWorld {
  readonly size: number;
  /** Ring capacity in bytes per ordered rank pair (a power of two). */
  readonly capacity: number;
  readonly timeoutMs: number;
  /** Int32[size]: 0 alive, 1 exited. */
  readonly status: SharedArrayBuffer;
  /** Int32[size]: doorbell of each rank. */
  readonly doorbells: SharedArrayBuffer;
  /** channels[src * size + dst]; null on the diagonal. */
  readonly channels: (SharedArrayBuffer | null)[];
}

export interface ThreadWorldOptions {
  /** Bytes per ordered pair, rounded up to a power of two (default 4 MiB). Bigger messages stream through. */
  capacity?: number;
  timeoutMs?: number;
}

export function createThreadWorld(size: number, opts: ThreadWorldOptions = {}): ThreadWorld {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`world size must be a positive integer, got ${size}`);
  const want = Math.max(4096, opts.capacity ?? 4 << 20);
  if (want > 1 << 30) throw new RangeError(`ring capacity ${want} exceeds 1 GiB`);
  const capacity = 2 ** Math.ceil(Math.log2(want));
  const channels: (SharedArrayBuffer | null)[] = [];
  for (let s = 0; s < size; s++) {
    for (let d = 0; d < size; d++) channels.push(s === d ? null : new SharedArrayBuffer(HEADER_BYTES + capacity));
  }
  return {
    size, capacity, timeoutMs: opts.timeoutMs ?? 30_000,
    status: new SharedArrayBuffer(4 * size), doorbells: new SharedArrayBuffer(4 * size), channels,
  };
}

function ring(bells: Int32Array, r: number): void {
  Atomics.add(bells, r, 1);
  Atomics.notify(bells, r);
}

/** Marks rank `r` as gone and wakes everybody blocked on one of its channels. Idempotent. */
export function markRankExited(world: ThreadWorld, r: number): void {
  const status = new Int32Array(world.status);
  const bells = new Int32Array(world.doorbells);
  Atomics.store(status, r, EXITED);
  for (let o = 0; o < world.size; o++) {
    ring(bells, o);
    if (o === r) continue;
    for (const sab of [world.channels[r * world.size + o]!, world.channels[o * world.size + r]!]) {
      const h = new Int32Array(sab, 0, 4);
      Atomics.notify(h, WRITTEN);
      Atomics.notify(h, READ);
    }
  }
}

interface Channel {
  readonly hdr: Int32Array;
  readonly data: Uint8Array;
}

function channel(world: ThreadWorld, src: number, dst: number): Channel {
  const sab = world.channels[src * world.size + dst]!;
  return { hdr: new Int32Array(sab, 0, 4), data: new Uint8Array(sab, HEADER_BYTES, world.capacity) };
}

/** The receiving end of one ring: a resumable frame parser. */
class Inbound {
  readonly #head = new Uint8Array(8);
  readonly #headI = new Int32Array(this.#head.buffer);
  #headGot = 0;
  #msg: Uint8Array | null = null;
  #tag = 0;
  #got = 0;
  #r: number;

  constructor(readonly src: number, readonly ch: Channel, readonly capacity: number, readonly bells: Int32Array, readonly deliver: (src: number, tag: number, m: Uint8Array) => void) {
    this.#r = Atomics.load(ch.hdr, READ);
  }

  /** True when the sender has written bytes not consumed yet. */
  pending(): boolean {
    return Atomics.load(this.ch.hdr, WRITTEN) !== this.#r;
  }

  /** Consumes whatever the sender has written; returns the number of bytes consumed. */
  drain(): number {
    const { hdr, data } = this.ch;
    const mask = this.capacity - 1;
    let avail = (Atomics.load(hdr, WRITTEN) - this.#r) | 0;
    const total = avail;
    while (avail > 0) {
      const pos = this.#r & mask;
      const contiguous = Math.min(avail, this.capacity - pos);
      let n: number;
      if (this.#msg === null) {
        n = Math.min(contiguous, 8 - this.#headGot);
        this.#head.set(data.subarray(pos, pos + n), this.#headGot);
        this.#headGot += n;
        if (this.#headGot === 8) {
          this.#tag = this.#headI[0]!;
          this.#msg = new Uint8Array(this.#headI[1]!);
          this.#got = 0;
        }
      } else {
        n = Math.min(contiguous, this.#msg.byteLength - this.#got);
        this.#msg.set(data.subarray(pos, pos + n), this.#got);
        this.#got += n;
      }
      this.#r = (this.#r + n) | 0;
      avail -= n;
      if (this.#msg !== null && this.#got === this.#msg.byteLength) {
        const done = this.#msg;
        this.#msg = null;
        this.#headGot = 0;
        // Free the ring space before handing over, so the sender can continue meanwhile.
        this.#release();
        this.deliver(this.src, this.#tag, done);
      }
    }
    if (total > 0) this.#release();
    return total;
  }

  #release(): void {
    Atomics.store(this.ch.hdr, READ, this.#r);
    Atomics.notify(this.ch.hdr, READ);
    ring(this.bells, this.src);
  }
}

/** A message being written into a ring, resumable. */
interface Outbound {
  readonly frames: Uint8Array[];
  seg: number;
  off: number;
  readonly op: string;
}

export interface ThreadCommOptions {
  timeoutMs?: number;
}

/** Event-loop transport: background readers (Atomics.waitAsync) deliver messages as they arrive. */
export class ThreadCommunicator extends BaseCommunicator {
  protected readonly world: ThreadWorld;
  readonly #status: Int32Array;
  protected readonly bells: Int32Array;
  protected readonly out: (Channel | null)[];
  protected readonly inbound: (Inbound | null)[];
  readonly #sendChain: Promise<void>[];
  readonly #queued: number[];

  constructor(world: ThreadWorld, rank: number, opts: ThreadCommOptions = {}, background = true) {
    super(rank, world.size, opts.timeoutMs ?? world.timeoutMs);
    this.world = world;
    this.#status = new Int32Array(world.status);
    this.bells = new Int32Array(world.doorbells);
    this.out = Array.from({ length: world.size }, (_, d) => (d === rank ? null : channel(world, rank, d)));
    this.inbound = Array.from({ length: world.size }, (_, s) =>
      s === rank ? null : new Inbound(s, channel(world, s, rank), world.capacity, this.bells, (src, tag, m) => this.deliver(src, tag, m)));
    this.#sendChain = Array.from({ length: world.size }, () => Promise.resolve());
    this.#queued = new Array(world.size).fill(0);
    if (background) for (let s = 0; s < world.size; s++) if (s !== rank) void this.#readLoop(s);
  }

  protected alive(r: number): boolean {
    return Atomics.load(this.#status, r) === ALIVE;
  }

  protected transmit(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    // Messages to one destination must not interleave in its ring: chain them. When nothing is queued
    // the copy starts synchronously, so bytes are in the receiver's ring before the caller goes on to
    // compute (the point of a receive hook).
    const run = (): Promise<void> => this.#write(dest, frame(tag, parts), op);
    const next = this.#queued[dest]! === 0 ? run() : this.#sendChain[dest]!.then(run);
    this.#queued[dest]!++;
    const settled = next.then(() => void this.#queued[dest]!--, () => void this.#queued[dest]!--);
    this.#sendChain[dest] = settled;
    return next;
  }

  /** Writes as much of `o` as fits now; returns bytes written. */
  protected writeSome(dest: number, o: Outbound): number {
    const { hdr, data } = this.out[dest]!;
    const cap = this.world.capacity;
    let w = Atomics.load(hdr, WRITTEN);
    let free = cap - ((w - Atomics.load(hdr, READ)) | 0);
    let written = 0;
    let unpublished = 0;
    const publish = (): void => {
      // One store + wake-up per batch of segments (many small rows), at least every 1 MiB so the
      // reader can start early on big messages.
      Atomics.store(hdr, WRITTEN, w);
      Atomics.notify(hdr, WRITTEN);
      unpublished = 0;
    };
    while (o.seg < o.frames.length) {
      const seg = o.frames[o.seg]!;
      if (o.off >= seg.byteLength) {
        o.seg++;
        o.off = 0;
        continue;
      }
      if (free === 0) {
        if (unpublished > 0) publish();
        free = cap - ((w - Atomics.load(hdr, READ)) | 0);
        if (free === 0) break;
      }
      const pos = w & (cap - 1);
      const n = Math.min(free, seg.byteLength - o.off, cap - pos);
      data.set(seg.subarray(o.off, o.off + n), pos);
      o.off += n;
      w = (w + n) | 0;
      free -= n;
      written += n;
      unpublished += n;
      if (unpublished >= 1 << 20) publish();
    }
    if (unpublished > 0) publish();
    if (written > 0) ring(this.bells, dest);
    return written;
  }

  async #write(dest: number, frames: Uint8Array[], op: string): Promise<void> {
    const { hdr } = this.out[dest]!;
    const o: Outbound = { frames, seg: 0, off: 0, op };
    let deadline = Date.now() + this.timeoutMs;
    for (;;) {
      if (this.closed) throw new CommClosedError(op);
      if (!this.alive(dest)) throw new RankFailedError(dest, op, 'exited');
      if (this.writeSome(dest, o) > 0) deadline = Date.now() + this.timeoutMs;
      if (o.seg >= o.frames.length) return;
      // Ring full: the receiver has not drained it yet. Wait for `read` to move.
      const left = deadline - Date.now();
      if (left <= 0) throw new RankFailedError(dest, op, 'timeout', `receiver did not drain its buffer within ${this.timeoutMs} ms`);
      const r = Atomics.load(hdr, READ);
      const full = ((Atomics.load(hdr, WRITTEN) - r) | 0) === this.world.capacity;
      if (!full) continue;
      const res = waitAsync(hdr, READ, r, Math.min(left, 1000));
      if (res.async) {
        // A pending waitAsync does not keep Node's event loop alive: hold a timer meanwhile, or a rank
        // whose only pending work is this send would exit (code 13, unsettled await).
        const keep = setTimeout(() => undefined, Math.min(left, 1000) + 50);
        await res.value;
        clearTimeout(keep);
      }
    }
  }

  async #readLoop(src: number): Promise<void> {
    const inb = this.inbound[src]!;
    const hdr = inb.ch.hdr;
    while (!this.closed) {
      const w = Atomics.load(hdr, WRITTEN);
      if (inb.drain() > 0) continue;
      if (!this.alive(src)) {
        if (inb.pending()) continue;
        this.peerFailed(src, 'exited');
        return;
      }
      const res = waitAsync(hdr, WRITTEN, w);
      if (res.async) await res.value;
    }
  }

  protected async shutdown(): Promise<void> {
    // Wake our own blocked readers so their loops see `closed` and end.
    for (const inb of this.inbound) if (inb) Atomics.notify(inb.ch.hdr, WRITTEN);
    for (const ch of this.out) if (ch) Atomics.notify(ch.hdr, READ);
  }
}

function frame(tag: number, parts: readonly Uint8Array[]): Uint8Array[] {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  return [new Uint8Array(new Int32Array([tag, total]).buffer), ...parts];
}

/**
 * Blocking transport for a thread that cannot yield (the model's synchronous forward): no background
 * readers; isend/waitAll make progress on all rings and sleep on the rank's doorbell (Atomics.wait).
 * The async API works too (it blocks inside a microtask). A dead peer is seen through its status word
 * when its owner marked it, otherwise through the timeout (the launcher's exit handler cannot run while
 * this thread blocks).
 */
export class SyncThreadCommunicator extends ThreadCommunicator implements SyncCommunicator {
  readonly #outQ: Outbound[][];

  constructor(world: ThreadWorld, rank: number, opts: ThreadCommOptions = {}) {
    super(world, rank, opts, false);
    this.#outQ = Array.from({ length: world.size }, () => []);
  }

  isend(dest: number, tag: number, parts: readonly Uint8Array[], op: string): void {
    if (this.closed) throw new CommClosedError(op);
    if (dest === this.rank) {
      void this.send(dest, tag, parts, op);
      return;
    }
    const reason = this.failureOf(dest);
    if (reason) throw this.operationFailed(this.failedError(dest, op, reason));
    this.#outQ[dest]!.push({ frames: frame(tag, parts), seg: 0, off: 0, op });
    this.#pushOut(dest);
  }

  #pushOut(dest: number): number {
    const q = this.#outQ[dest]!;
    let n = 0;
    while (q.length > 0) {
      n += this.writeSome(dest, q[0]!);
      if (q[0]!.seg < q[0]!.frames.length) break;
      q.shift();
    }
    return n;
  }

  waitAll(srcs: readonly number[], tag: number, op: string): Uint8Array[] {
    const got: (Uint8Array | undefined)[] = new Array(srcs.length);
    let missing = srcs.length;
    let deadline = Date.now() + this.timeoutMs;
    for (;;) {
      if (this.closed) throw new CommClosedError(op);
      const bell = Atomics.load(this.bells, this.rank);
      let moved = 0;
      for (let d = 0; d < this.size; d++) if (d !== this.rank) moved += this.#pushOut(d);
      for (const inb of this.inbound) if (inb) moved += inb.drain();
      for (let i = 0; i < srcs.length; i++) {
        if (got[i]) continue;
        const m = this.takeQueued(srcs[i]!, tag);
        if (m) {
          got[i] = m;
          missing--;
        }
      }
      const sending = this.#outQ.findIndex((q) => q.length > 0);
      if (missing === 0 && sending < 0) return got as Uint8Array[];
      if (moved > 0) {
        deadline = Date.now() + this.timeoutMs;
        continue;
      }
      for (let i = 0; i < srcs.length; i++) {
        const s = srcs[i]!;
        if (!got[i] && s !== this.rank && !this.alive(s) && !this.inbound[s]!.pending()) this.#fail(s, op, 'exited');
      }
      if (sending >= 0 && !this.alive(sending)) this.#fail(sending, op, 'exited');
      if (Date.now() > deadline) {
        const blame = missing > 0 ? srcs[got.findIndex((g) => !g)]! : sending;
        this.#fail(blame, op, 'timeout');
      }
      Atomics.wait(this.bells, this.rank, bell, 20);
    }
  }

  #fail(rank: number, op: string, reason: 'exited' | 'timeout'): never {
    this.#outQ[rank]!.length = 0;
    this.peerFailed(rank, reason, true);
    throw new RankFailedError(rank, op, reason, reason === 'timeout' ? `no progress within ${this.timeoutMs} ms` : '');
  }

  protected override transmit(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    this.isend(dest, tag, parts, op);
    return Promise.resolve();
  }

  override recvAll(srcs: readonly number[], tag: number, op: string, _timeoutMs?: number): Promise<Uint8Array[]> {
    return Promise.resolve().then(() => this.waitAll(srcs, tag, op));
  }
}
