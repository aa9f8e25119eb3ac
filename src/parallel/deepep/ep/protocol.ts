// What rank 0 (the thread running the model) tells the expert ranks before each MoE layer, and the
// static data every expert rank starts with. Every rank then issues the same sequence of DeepEP calls.
export const CMD_MOE = 1;
export const CMD_STOP = 2;

export const MODE_NORMAL = 0;
export const MODE_LOW_LATENCY = 1;

/** [cmd, layer, mode, microBatches] as Int32. */
export function encodeCommand(cmd: number, layer = 0, mode = 0, microBatches = 1): Uint8Array {
  return new Uint8Array(new Int32Array([cmd, layer, mode, microBatches]).buffer);
}

/** Which DeepGEMM runs the routed experts on every rank: the wasm kernels (default) or the TS reference. */
export type EpExpertBackend = 'wasm' | 'ref';

export interface ExpertRankData {
  modelDir: string;
  backend: EpExpertBackend;
  hidden: number;
  moeInter: number;
  numTopk: number;
  numPhysical: number;
  maxTokensPerRank: number;
  /** [layer, phy2log[P]] per MoE layer. */
  phy2log: [number, number[]][];
}
