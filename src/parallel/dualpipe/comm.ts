// Point-to-point channels between pipeline ranks over MessagePorts: one port per neighbour, messages
// tagged by kind ("F0", "B1": activation or gradient of module 0/1) and matched FIFO per (peer, tag),
// which is how NCCL matches the reference's batched isend/irecv between a pair of ranks.
import type { MessagePort } from 'node:worker_threads';
import type { FloatArray } from '../../tensor/autograd/index.ts';
import { PipelineRankError } from './errors.ts';

export interface P2PMessage {
  tag: string;
  chunk: number;
  shape: number[];
  data: FloatArray;
}

export interface P2P {
  /** Posts a message now (non-blocking). */
  send(peer: number, msg: P2PMessage): void;
  /** Resolves with the next message of `tag` from `peer`. */
  recv(peer: number, tag: string): Promise<P2PMessage>;
  close(): void;
}

export class PortP2P implements P2P {
  private readonly queues = new Map<string, P2PMessage[]>();
  private readonly waiters = new Map<string, Array<(m: P2PMessage) => void>>();

  constructor(
    private readonly rank: number,
    private readonly ports: Map<number, MessagePort>,
  ) {
    for (const [peer, port] of ports) {
      port.on('message', (m: P2PMessage) => {
        const key = `${peer}:${m.tag}`;
        const w = this.waiters.get(key);
        if (w && w.length) w.shift()!(m);
        else {
          let q = this.queues.get(key);
          if (!q) this.queues.set(key, (q = []));
          q.push(m);
        }
      });
    }
  }

  private port(peer: number): MessagePort {
    const p = this.ports.get(peer);
    if (!p) throw new PipelineRankError(`no channel to rank ${peer}`, this.rank);
    return p;
  }

  send(peer: number, msg: P2PMessage): void {
    // The payload is a private copy: transfer it instead of cloning.
    this.port(peer).postMessage(msg, [msg.data.buffer as ArrayBuffer]);
  }

  recv(peer: number, tag: string): Promise<P2PMessage> {
    this.port(peer);
    const key = `${peer}:${tag}`;
    const q = this.queues.get(key);
    if (q && q.length) return Promise.resolve(q.shift()!);
    return new Promise((resolve) => {
      let w = this.waiters.get(key);
      if (!w) this.waiters.set(key, (w = []));
      w.push(resolve);
    });
  }

  close(): void {
    for (const p of this.ports.values()) p.close();
  }
}
