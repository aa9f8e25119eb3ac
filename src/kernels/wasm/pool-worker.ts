// A WasmPool worker (see pool.ts): instantiates the modules over the shared memory, then waits on the
// sequence word (polling a moment, then sleeping) and runs each op it is given. Errors are written back,
// never thrown away.
import { parentPort, workerData } from 'node:worker_threads';
import { functionNames, instantiateAll, MAX_ARGS, W_DEAD, W_ERROR, W_READY, type WasmFn } from './pool.ts';

interface Data {
  index: number; ctrl: SharedArrayBuffer; args: SharedArrayBuffer; errs: SharedArrayBuffer;
  memory: WebAssembly.Memory; modules: Record<string, WebAssembly.Module>;
  /** Polls of SEQ after an op before sleeping (pool.ts poolSpinPolls). */
  spin: number;
}
const SEQ = 0, DONE = 1, STOP = 2, FN = 3, STATE = 8, ERR_BYTES = 512;

const d = (workerData as { data: Data }).data;
const ctrl = new Int32Array(d.ctrl);
const args = new Float64Array(d.args);
const errs = new Uint8Array(d.errs);
const me = d.index;

function writeError(msg: string): void {
  const b = new TextEncoder().encode(msg.slice(0, ERR_BYTES - 1));
  errs.fill(0, me * ERR_BYTES, (me + 1) * ERR_BYTES);
  errs.set(b, me * ERR_BYTES);
}

let dead = false;
function markDead(reason: string): void {
  if (dead) return;
  dead = true;
  writeError(reason);
  Atomics.store(ctrl, STATE + me, W_DEAD);
  Atomics.add(ctrl, DONE, 1);
  Atomics.notify(ctrl, DONE);
}
process.on('exit', (code) => markDead(`exited with code ${code}`));
process.on('uncaughtException', (e) => {
  markDead(`uncaught ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});

const inst = instantiateAll(d.modules, d.memory);
const table: Array<[string, WasmFn]> = functionNames(d.modules).map((n) => {
  const dot = n.indexOf('.');
  return [n, inst[n.slice(0, dot)]![n.slice(dot + 1)]!];
});

// Read the sequence word BEFORE announcing readiness: the first op may be posted the moment the
// parent hears 'ready', and reading it afterwards could skip that op (the parent would wait forever).
let seen = Atomics.load(ctrl, SEQ);
Atomics.store(ctrl, STATE + me, W_READY);
parentPort!.postMessage('ready');
for (;;) {
  // Poll a moment before sleeping: ops come back to back (the JS between two ops of a forward takes
  // microseconds), and a futex wake costs tens of microseconds, more once the vCPU has gone idle.
  // (Atomics.wait itself returns at once when the word has already moved.)
  for (let spin = 0; spin < d.spin && Atomics.load(ctrl, SEQ) === seen; spin++) { /* poll */ }
  Atomics.wait(ctrl, SEQ, seen);
  const seq = Atomics.load(ctrl, SEQ);
  if (seq === seen) continue;
  seen = seq;
  if (Atomics.load(ctrl, STOP)) break;
  const base = me * MAX_ARGS;
  const n = args[base]!;
  if (n === -2) process.exit(3); // test hook: simulated crash
  if (n >= 0) {
    const [name, fn] = table[Atomics.load(ctrl, FN)]!;
    const a: number[] = [];
    for (let i = 0; i < n; i++) a.push(args[base + 1 + i]!);
    try {
      fn(...a);
    } catch (e) {
      writeError(`${name}: ${e instanceof Error ? e.message : String(e)}`);
      Atomics.store(ctrl, STATE + me, W_ERROR);
    }
  }
  Atomics.add(ctrl, DONE, 1);
  Atomics.notify(ctrl, DONE);
}
dead = true; // normal stop: not a death
parentPort!.close();
