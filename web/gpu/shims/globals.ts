// Browser stand-ins for the Node globals the engine's modules use (injected by src/server/gpu-page.ts):
// Buffer (UTF-8 byte counts and encodings, hex strings) and setImmediate (a macrotask through a
// MessageChannel, so the engine's loop yields to the page without setTimeout's 4 ms clamp).
/** Bytes with Node's toString('utf8' | 'hex'). */
export class BufferShim extends Uint8Array {
  override toString(enc: 'utf8' | 'hex' = 'utf8'): string {
    if (enc === 'hex') return Array.from(this, (b) => b.toString(16).padStart(2, '0')).join('');
    return new TextDecoder().decode(this);
  }
}

function bytes(b: ArrayLike<number>): BufferShim {
  const out = new BufferShim(b.length);
  out.set(b);
  return out;
}

export const Buffer = {
  from(v: string | ArrayLike<number>, enc: string = 'utf8'): BufferShim {
    if (typeof v !== 'string') return bytes(v);
    if (enc !== 'utf8' && enc !== 'utf-8') throw new Error(`Buffer shim: encoding ${enc}`);
    return bytes(new TextEncoder().encode(v));
  },
  byteLength(s: string): number {
    return new TextEncoder().encode(s).length;
  },
  isBuffer(x: unknown): x is BufferShim {
    return x instanceof BufferShim;
  },
  concat(parts: readonly Uint8Array[]): BufferShim {
    const out = new BufferShim(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  },
};

const queue: (() => void)[] = [];
const channel = new MessageChannel();
channel.port1.onmessage = () => queue.shift()?.();

export function setImmediate(f: (...a: unknown[]) => void, ...args: unknown[]): number {
  queue.push(() => f(...args));
  channel.port2.postMessage(0);
  return 0;
}
