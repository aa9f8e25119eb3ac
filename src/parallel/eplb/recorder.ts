// Expert routing statistics for EPLB: counts how often each routed expert of each MoE layer was chosen
// over a sliding window, in the layout rebalanceExperts expects (weight [L][E]).
//
// Hook it into the model's routing callback: `onRouting(layer, experts, weights)` where experts is the
// top-k choice per token, Int32Array [T, k] row-major. `recorder.onRouting` is that callback, bound.
// Window units: 'tokens' keeps the last N tokens of each layer (exact per token), 'steps' keeps the last
// N record() calls (forward passes) of each layer.
import { writeFileSync } from 'node:fs';
import { EplbArgumentError } from './errors.ts';

export interface ExpertLoadRecorderOptions {
  numLayers: number;
  numExperts: number;
  /** Experts per token (k); needed to split `experts` into tokens. */
  topK: number;
  /** Window length in `unit`s. */
  window: number;
  unit?: 'tokens' | 'steps';
}

export interface ExpertLoadSnapshot {
  numLayers: number;
  numExperts: number;
  window: number;
  unit: 'tokens' | 'steps';
  /** [L][E] routing counts within the window. */
  load: number[][];
}

interface LayerWindow {
  counts: Float64Array; // [E] current counts
  // tokens mode: ring of expert ids, window*k slots; steps mode: ring of per-step count vectors.
  ring: Int32Array | Float64Array[];
  head: number; // next slot to overwrite
  filled: number; // slots in use
}

export class ExpertLoadRecorder {
  readonly numLayers: number;
  readonly numExperts: number;
  readonly topK: number;
  readonly window: number;
  readonly unit: 'tokens' | 'steps';
  private readonly layers: LayerWindow[];

  constructor(opts: ExpertLoadRecorderOptions) {
    for (const k of ['numLayers', 'numExperts', 'topK', 'window'] as const) {
      const v = opts[k];
      if (!Number.isInteger(v) || v < 1) throw new EplbArgumentError(`ExpertLoadRecorder: ${k} must be a positive integer, got ${v}`, k, v);
    }
    this.numLayers = opts.numLayers;
    this.numExperts = opts.numExperts;
    this.topK = opts.topK;
    this.window = opts.window;
    this.unit = opts.unit ?? 'tokens';
    this.layers = Array.from({ length: this.numLayers }, () => ({
      counts: new Float64Array(this.numExperts),
      ring: this.unit === 'tokens' ? new Int32Array(this.window * this.topK) : [],
      head: 0,
      filled: 0,
    }));
  }

  /** Records the top-k choices of one forward pass of `layer`: experts is [T, k] row-major. */
  record(layer: number, experts: Int32Array | ArrayLike<number>): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.numLayers) {
      throw new EplbArgumentError(`ExpertLoadRecorder: layer ${layer} outside 0..${this.numLayers - 1}`, 'layer', layer);
    }
    if (experts.length % this.topK !== 0) {
      throw new EplbArgumentError(`ExpertLoadRecorder: ${experts.length} expert ids are not a whole number of tokens of k=${this.topK}`, 'experts', experts.length);
    }
    for (let i = 0; i < experts.length; i++) {
      const e = experts[i]!;
      if (!Number.isInteger(e) || e < 0 || e >= this.numExperts) {
        throw new EplbArgumentError(`ExpertLoadRecorder: expert id ${e} outside 0..${this.numExperts - 1}`, 'experts', e);
      }
    }
    const w = this.layers[layer]!;
    if (this.unit === 'tokens') {
      const ring = w.ring as Int32Array;
      const cap = ring.length;
      // Only the last `window` tokens of a long batch can stay in the window.
      const start = Math.max(0, experts.length - cap);
      for (let i = start; i < experts.length; i++) {
        if (w.filled === cap) w.counts[ring[w.head]!]! -= 1;
        else w.filled++;
        ring[w.head] = experts[i]!;
        w.counts[experts[i]!]! += 1;
        w.head = (w.head + 1) % cap;
      }
    } else {
      const ring = w.ring as Float64Array[];
      const step = new Float64Array(this.numExperts);
      for (let i = 0; i < experts.length; i++) step[experts[i]!]! += 1;
      if (w.filled === this.window) {
        const old = ring[w.head]!;
        for (let e = 0; e < this.numExperts; e++) w.counts[e]! -= old[e]!;
      } else w.filled++;
      ring[w.head] = step;
      for (let e = 0; e < this.numExperts; e++) w.counts[e]! += step[e]!;
      w.head = (w.head + 1) % this.window;
    }
  }

  /** The model's routing callback (weights are not needed for counting). */
  readonly onRouting = (layer: number, experts: Int32Array, _weights?: Float32Array | ArrayLike<number>): void => {
    this.record(layer, experts);
  };

  /** [L][E] counts in the current window (layers never recorded are all zero). */
  snapshot(): number[][] {
    return this.layers.map((w) => Array.from(w.counts));
  }

  /** Layers that have received at least one record() call: the MoE layers, for rebalanceExperts. */
  recordedLayers(): number[] {
    return this.layers.flatMap((w, l) => (w.filled > 0 ? [l] : []));
  }

  reset(): void {
    for (const w of this.layers) {
      w.counts.fill(0);
      w.head = 0;
      w.filled = 0;
      if (this.unit === 'steps') (w.ring as Float64Array[]).length = 0;
    }
  }

  toJSON(): ExpertLoadSnapshot {
    return { numLayers: this.numLayers, numExperts: this.numExperts, window: this.window, unit: this.unit, load: this.snapshot() };
  }

  /** Writes the bare [L][E] load array, the file format `seekd eplb --weights` reads. */
  writeFile(path: string, opts: { onlyRecorded?: boolean } = {}): void {
    const snap = this.snapshot();
    const rows = opts.onlyRecorded ? this.recordedLayers().map((l) => snap[l]!) : snap;
    writeFileSync(path, JSON.stringify(rows) + '\n');
  }
}
