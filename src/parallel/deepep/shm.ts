// Worker-thread ranks over SharedArrayBuffer: the NVLink analogue of DeepEP's intranode path
// (https://github.com/deepseek-ai/DeepEP/blob/main/csrc/kernels/intranode.cu keeps a ring buffer per
// sender/receiver pair in the receiver's memory and signals with head/tail counters). Here every ordered
// pair (src -> dst) owns one single-producer single-consumer byte ring; the sender copies straight into it
// and bumps `written` (Atomics.store + Atomics.notify), the receiver's background reader drains it and
// bumps `read`. Messages are framed as [tag int32][length int32][bytes]. Counters wrap mod 2^32 and the
// capacity is a power of two, so position = counter & (capacity - 1).
//
// Liveness: `status[r]` is set by whoever owns rank r's worker (the launcher) when it exits; it notifies
// every counter of r's channels so blocked readers and writers wake, see the status and fail with
// RankFailedError. A peer that hangs without exiting is caught by the timeouts.
import { BaseCommunicator } from './comm.ts';
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
  return { size, capacity, timeoutMs: opts.timeoutMs ?? 30_000, status: new SharedArrayBuffer(4 * size), channels };
}

/** Marks rank `r` as gone and wakes everybody blocked on one of its channels. Idempotent. */
export function markRankExited(world: ThreadWorld, r: number): void {
  const status = new Int32Array(world.status);
  Atomics.store(status, r, EXITED);
  for (let o = 0; o < world.size; o++) {
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

export class ThreadCommunicator extends BaseCommunicator {
  readonly #world: ThreadWorld;
  readonly #status: Int32Array;
  readonly #out: (Channel | null)[];
  readonly #in: (Channel | null)[];
  readonly #sendChain: Promise<void>[];
  readonly #queued: number[];
  readonly #mask: number;

  constructor(world: ThreadWorld, rank: number, timeoutMs = world.timeoutMs) {
    super(rank, world.size, timeoutMs);
    this.#world = world;
    this.#mask = world.capacity - 1;
    this.#status = new Int32Array(world.status);
    this.#out = Array.from({ length: world.size }, (_, d) => (d === rank ? null : channel(world, rank, d)));
    this.#in = Array.from({ length: world.size }, (_, s) => (s === rank ? null : channel(world, s, rank)));
    this.#sendChain = Array.from({ length: world.size }, () => Promise.resolve());
    this.#queued = new Array(world.size).fill(0);
    for (let s = 0; s < world.size; s++) if (s !== rank) void this.#readLoop(s);
  }

  #alive(r: number): boolean {
    return Atomics.load(this.#status, r) === ALIVE;
  }

  protected transmit(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    // Messages to one destination must not interleave in its ring: chain them. When nothing is queued
    // the copy starts synchronously, so bytes are in the receiver's ring before the caller goes on to
    // compute (the point of a receive hook).
    const run = (): Promise<void> => this.#write(dest, tag, parts, op);
    const next = this.#queued[dest]! === 0 ? run() : this.#sendChain[dest]!.then(run);
    this.#queued[dest]!++;
    const settled = next.then(() => void this.#queued[dest]!--, () => void this.#queued[dest]!--);
    this.#sendChain[dest] = settled;
    return next;
  }

  async #write(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    const { hdr, data } = this.#out[dest]!;
    const cap = this.#world.capacity;
    let total = 0;
    for (const p of parts) total += p.byteLength;
    const head = new Uint8Array(new Int32Array([tag, total]).buffer);
    const deadline = Date.now() + this.timeoutMs;
    let w = Atomics.load(hdr, WRITTEN);
    for (const seg of [head, ...parts]) {
      let off = 0;
      while (off < seg.byteLength) {
        if (this.closed) throw new CommClosedError(op);
        if (!this.#alive(dest)) throw new RankFailedError(dest, op, 'exited');
        const r = Atomics.load(hdr, READ);
        const free = cap - ((w - r) | 0);
        if (free === 0) {
          // Ring full: the receiver has not drained it yet. Wait for `read` to move.
          const left = deadline - Date.now();
          if (left <= 0) throw new RankFailedError(dest, op, 'timeout', `receiver did not drain its buffer within ${this.timeoutMs} ms`);
          const res = waitAsync(hdr, READ, r, Math.min(left, 1000));
          if (res.async) await res.value;
          continue;
        }
        const pos = w & this.#mask;
        const n = Math.min(free, seg.byteLength - off, cap - pos);
        data.set(seg.subarray(off, off + n), pos);
        off += n;
        w = (w + n) | 0;
        Atomics.store(hdr, WRITTEN, w);
        Atomics.notify(hdr, WRITTEN);
      }
    }
  }

  async #readLoop(src: number): Promise<void> {
    const { hdr, data } = this.#in[src]!;
    const cap = this.#world.capacity;
    const head = new Uint8Array(8);
    const headI = new Int32Array(head.buffer);
    let headGot = 0;
    let msg: Uint8Array | null = null;
    let tag = 0;
    let got = 0;
    let r = Atomics.load(hdr, READ);
    while (!this.closed) {
      const w = Atomics.load(hdr, WRITTEN);
      let avail = (w - r) | 0;
      if (avail === 0) {
        if (!this.#alive(src)) {
          this.peerFailed(src, 'exited');
          return;
        }
        const res = waitAsync(hdr, WRITTEN, w);
        if (res.async) await res.value;
        continue;
      }
      while (avail > 0) {
        const pos = r & this.#mask;
        const contiguous = Math.min(avail, cap - pos);
        let n: number;
        if (msg === null) {
          n = Math.min(contiguous, 8 - headGot);
          head.set(data.subarray(pos, pos + n), headGot);
          headGot += n;
          if (headGot === 8) {
            tag = headI[0]!;
            msg = new Uint8Array(headI[1]!);
            got = 0;
          }
        } else {
          n = Math.min(contiguous, msg.byteLength - got);
          msg.set(data.subarray(pos, pos + n), got);
          got += n;
        }
        r = (r + n) | 0;
        avail -= n;
        if (msg !== null && got === msg.byteLength) {
          const done = msg;
          msg = null;
          headGot = 0;
          // Free the ring space before handing over, so the sender can continue meanwhile.
          Atomics.store(hdr, READ, r);
          Atomics.notify(hdr, READ);
          this.deliver(src, tag, done);
        }
      }
      Atomics.store(hdr, READ, r);
      Atomics.notify(hdr, READ);
    }
  }

  protected async shutdown(): Promise<void> {
    // Wake our own blocked readers so their loops see `closed` and end.
    for (const ch of this.#in) if (ch) Atomics.notify(ch.hdr, WRITTEN);
    for (const ch of this.#out) if (ch) Atomics.notify(ch.hdr, READ);
  }
}
