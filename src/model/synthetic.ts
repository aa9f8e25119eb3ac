// Synthetic checkpoints of a real shape: for any DeepSeek-V2/V3 config.json (a preset's, or a file), a
// Hugging Face directory with the published tensor names, shapes, dtypes and shard layout
// (`model-0000k-of-0000N.safetensors` + `model.safetensors.index.json`), filled with seeded random
// values or left as sparse zeros. It lets the loader, `seekd info`, memory planning and serving run at
// full model width without downloading hundreds of gigabytes.
//
// - Tensors follow weight-map.ts's table (tensorSpecs with MTP), routed experts one tensor each, as
//   published. FP8 storage quantizes what DeepSeek-V3 quantizes: the decoder layers' (and the MTP
//   block's) attention projections, dense MLP, shared and routed experts, each F8_E4M3 with its
//   `<name>_scale_inv` F32 [ceil(rows/128), ceil(cols/128)] right after it. Embeddings, lm_head, norms,
//   the router and the MTP module's own eh_proj/embed/head stay BF16; e_score_correction_bias is F32.
// - Random values: each tensor draws from its own xorshift32 stream (seeded by the seed and the tensor's
//   name, so a tensor's values do not depend on the shard layout or the other tensors), and each 16-bit
//   draw indexes a 65536-entry table of the target distribution already encoded in the stored dtype
//   (inverse-transform sampling: quantiles of a normal). Tensors are generated straight into one
//   reusable 16 MiB buffer and written in pieces of that size, so a 1.85 GB embedding needs no
//   allocation of its own and the generator runs at memory speed.
// - Zeros: each shard is its header plus ftruncate to the full size, so nothing is written and a
//   sparse-file filesystem allocates no data blocks; the tensors read as zeros (FP8 code 0 is +0).
import { existsSync, mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { DTYPE_BYTES, f32ToBf16, f32ToFp8e4m3, FP8_E4M3_TABLE, type DType } from '../tensor/dtypes.ts';
import { SafetensorsFileWriter, layoutHeader, lengthPrefix } from '../weights/writer.ts';
import { INDEX_FILE } from '../weights/checkpoint.ts';
import { SCALE_SUFFIX } from '../weights/pairing.ts';
import { ConfigError, parseConfig, type DeepseekConfig } from './config.ts';
import { tensorSpecs } from './weight-map.ts';

/** Bad options or an output directory that cannot be used: exit code 2 in the CLI. */
export class SyntheticCheckpointError extends Error {
  override name = 'SyntheticCheckpointError';
  readonly exitCode = 2;
}

export type StorageDType = 'bf16' | 'fp8';
export type FillMode = 'random' | 'zeros';

export interface SyntheticOptions {
  /** Storage of the linear weights; default fp8 when the config has a quantization_config, else bf16. */
  dtype?: StorageDType;
  /** 'random' (default): seeded values; 'zeros': sparse all-zero tensors, nothing written. */
  fill?: FillMode;
  /** Seed of the random values (default 0). */
  seed?: number;
  /** Overrides num_hidden_layers (the MTP layers follow at the new index). */
  layers?: number;
  /** Number of shard files (default: ceil(bytes / 5 GB), Hugging Face's default shard size). */
  shards?: number;
  /** Write the MTP modules (default true); false also sets num_nextn_predict_layers to 0 in config.json. */
  mtp?: boolean;
  /** Write into a non-empty directory, replacing its config, index and model*.safetensors files. */
  force?: boolean;
  /** More files to write into the directory (e.g. tokenizer.json), name -> contents. */
  files?: Record<string, string | Uint8Array>;
  /** Called after each piece written, with data bytes done and in all. */
  onProgress?: (done: number, total: number) => void;
}

/** One tensor as stored. */
export interface StoredTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** Random fill: a normal N(mean, std²) in the stored dtype; FP8 codes: std in code units. */
  init: { mean: number; std: number };
}

export interface CheckpointPlan {
  /** config.json as written (overrides applied). */
  configJson: Record<string, unknown>;
  config: DeepseekConfig;
  dtype: StorageDType;
  tensors: StoredTensor[];
  /** Shard of each tensor (0-based, non-decreasing, every shard non-empty). */
  shardOf: number[];
  shards: number;
  /** Sum of the tensors' bytes (the index's total_size). */
  dataBytes: number;
}

export interface SyntheticSummary {
  dir: string;
  /** Files written, relative to dir (shards first). */
  files: string[];
  shards: number;
  tensors: number;
  /** The index's total_size: tensor bytes. */
  dataBytes: number;
  /** Size of the shard files (headers included). */
  fileBytes: number;
  seconds: number;
  /** fileBytes / seconds, in MB/s (10^6). */
  mbPerSec: number;
  fill: FillMode;
  dtype: StorageDType;
}

/** Hugging Face's default max_shard_size ("5GB"), for configs without a published shard count. */
export const DEFAULT_SHARD_BYTES = 5e9;
const FP8_BLOCK = 128;
/** FP8 codes are drawn as N(0, CODE_STD²) in code units (saturating at ±448): the spread of a block whose max maps to 448 (amax ≈ 4σ for 16K normal values). */
const CODE_STD = 112;

/** Shard file name as Hugging Face writes it: model-00001-of-00004.safetensors. */
export function shardFileName(k: number, n: number): string {
  if (n === 1) return 'model.safetensors';
  const pad = (x: number) => String(x).padStart(5, '0');
  return `model-${pad(k + 1)}-of-${pad(n)}.safetensors`;
}

/** The tensors DeepSeek stores in FP8: decoder-block linears (attention, dense MLP, shared and routed experts), not the router nor the MTP module's own projections. */
function quantized(target: readonly (string | number)[]): boolean {
  return target.some((p) => p === 'attn' || p === 'dense' || p === 'experts' || p === 'shared');
}

function bytesOf(t: { dtype: DType; shape: number[] }): number {
  return t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
}

/** Storage tensors of a config, in the weight table's order, FP8 scales right after their weight. */
export function storedTensors(c: DeepseekConfig, dtype: StorageDType, mtp = true): StoredTensor[] {
  const out: StoredTensor[] = [];
  for (const s of tensorSpecs(c, { mtp })) {
    if (s.kind === 'embed') {
      out.push({ name: s.name, dtype: 'BF16', shape: s.shape, init: { mean: 0, std: 1 } });
    } else if (s.kind === 'vector') {
      // The router's correction bias is F32 in DeepSeek's checkpoints (small offsets); norms are ~1.
      if (s.name.endsWith('e_score_correction_bias')) out.push({ name: s.name, dtype: 'F32', shape: s.shape, init: { mean: 0, std: 0.01 } });
      else out.push({ name: s.name, dtype: 'BF16', shape: s.shape, init: { mean: 1, std: 0.1 } });
    } else {
      const [rows, cols] = s.shape as [number, number];
      const std = 1 / Math.sqrt(cols);
      if (dtype === 'fp8' && quantized(s.target)) {
        out.push({ name: s.name, dtype: 'F8_E4M3', shape: s.shape, init: { mean: 0, std: CODE_STD } });
        // Dequantized value = code · scale_inv: scale std/σ(codes) gives the weight std; ±10% per block.
        const scale = std / fp8CodeStd();
        out.push({ name: s.name + SCALE_SUFFIX, dtype: 'F32', shape: [Math.ceil(rows / FP8_BLOCK), Math.ceil(cols / FP8_BLOCK)], init: { mean: scale, std: 0.1 * scale } });
      } else {
        out.push({ name: s.name, dtype: 'BF16', shape: s.shape, init: { mean: 0, std } });
      }
    }
  }
  return out;
}

/**
 * Splits tensors (in order) into `n` runs of about equal bytes: a tensor goes to the shard its middle
 * byte falls in, then runs are nudged so that no shard is empty or skipped.
 */
export function assignShards(sizes: readonly number[], n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 1) throw new SyntheticCheckpointError(`shard count must be a positive integer, got ${n}`);
  if (n > sizes.length) throw new SyntheticCheckpointError(`${n} shards for ${sizes.length} tensors: every shard needs at least one tensor`);
  const total = sizes.reduce((a, b) => a + b, 0);
  const target = total / n;
  const out: number[] = [];
  let offset = 0;
  let prev = 0;
  for (let i = 0; i < sizes.length; i++) {
    let s = target > 0 ? Math.floor((offset + sizes[i]! / 2) / target) : 0;
    // Never skip a shard, and leave at least one tensor for each shard still to come.
    s = Math.min(s, i === 0 ? 0 : prev + 1, n - 1);
    s = Math.max(s, prev, n - (sizes.length - i));
    out.push(s);
    prev = s;
    offset += sizes[i]!;
  }
  return out;
}

/** Applies the overrides to a config.json and lays out the tensors and shards (no I/O). */
export function planCheckpoint(configJson: Record<string, unknown>, opts: SyntheticOptions = {}): CheckpointPlan {
  if (configJson === null || typeof configJson !== 'object' || Array.isArray(configJson)) throw new SyntheticCheckpointError('config must be a JSON object');
  const json: Record<string, unknown> = { ...configJson };
  if (opts.layers !== undefined) {
    if (!Number.isSafeInteger(opts.layers) || opts.layers < 1) throw new SyntheticCheckpointError(`layers must be a positive integer, got ${opts.layers}`);
    json.num_hidden_layers = opts.layers;
  }
  const mtp = opts.mtp ?? true;
  // Without the MTP tensors the config must not announce them, or loading the directory fails.
  if (!mtp) json.num_nextn_predict_layers = 0;
  const hasQuant = json.quantization_config !== undefined && json.quantization_config !== null;
  const dtype: StorageDType = opts.dtype ?? (hasQuant ? 'fp8' : 'bf16');
  if (dtype !== 'bf16' && dtype !== 'fp8') throw new SyntheticCheckpointError(`dtype must be bf16 or fp8, got ${JSON.stringify(dtype)}`);
  if (dtype === 'bf16') delete json.quantization_config;
  else if (!hasQuant) json.quantization_config = { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [FP8_BLOCK, FP8_BLOCK] };
  let config: DeepseekConfig;
  try {
    config = parseConfig(json);
  } catch (e) {
    if (e instanceof ConfigError) throw new SyntheticCheckpointError(e.message);
    throw e;
  }
  const tensors = storedTensors(config, dtype, mtp);
  const sizes = tensors.map(bytesOf);
  const dataBytes = sizes.reduce((a, b) => a + b, 0);
  const shards = opts.shards ?? Math.max(1, Math.ceil(dataBytes / DEFAULT_SHARD_BYTES));
  return { configJson: json, config, dtype, tensors, shardOf: assignShards(sizes, shards), shards, dataBytes };
}

// ---------------------------------------------------------------- value tables and generators

let unitQuantiles: Float64Array | undefined;

/** erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): ample for a 16-bit sampling table. */
function erf(x: number): number {
  const s = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

/** Φ⁻¹((i + 0.5) / 65536) for i < 65536, symmetric, rescaled to exactly unit variance. */
function quantiles(): Float64Array {
  if (unitQuantiles) return unitQuantiles;
  const N = 65536;
  const q = new Float64Array(N);
  for (let i = 0; i < N / 2; i++) {
    const p = (i + 0.5) / N; // < 0.5: the negative half
    let lo = -10, hi = 0;
    for (let it = 0; it < 60; it++) {
      const mid = (lo + hi) / 2;
      if (0.5 * (1 + erf(mid / Math.SQRT2)) < p) lo = mid;
      else hi = mid;
    }
    q[i] = (lo + hi) / 2;
    q[N - 1 - i] = -q[i]!;
  }
  let ss = 0;
  for (const v of q) ss += v * v;
  const k = 1 / Math.sqrt(ss / N);
  for (let i = 0; i < N; i++) q[i]! *= k;
  unitQuantiles = q;
  return q;
}

let codeStd: number | undefined;

/** Standard deviation of the decoded FP8 code table (saturation and rounding make it a little off CODE_STD). */
function fp8CodeStd(): number {
  if (codeStd === undefined) {
    const t = table('F8_E4M3', 0, CODE_STD) as Uint8Array;
    let ss = 0;
    for (const c of t) ss += FP8_E4M3_TABLE[c]! ** 2;
    codeStd = Math.sqrt(ss / t.length);
  }
  return codeStd;
}

const tables = new Map<string, Uint8Array | Uint16Array | Uint32Array>();
const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);

/** 65536 values of N(mean, std²) encoded in `dtype` (cached: a checkpoint has a few distinct distributions). */
function table(dtype: DType, mean: number, std: number): Uint8Array | Uint16Array | Uint32Array {
  const key = `${dtype}:${mean}:${std}`;
  let t = tables.get(key);
  if (t) return t;
  const q = quantiles();
  if (dtype === 'BF16') {
    const b = new Uint16Array(q.length);
    for (let i = 0; i < q.length; i++) b[i] = f32ToBf16(mean + std * q[i]!);
    t = b;
  } else if (dtype === 'F32') {
    const b = new Uint32Array(q.length);
    for (let i = 0; i < q.length; i++) { f32Bits[0] = mean + std * q[i]!; b[i] = u32Bits[0]!; }
    t = b;
  } else if (dtype === 'F8_E4M3') {
    // f32ToFp8e4m3 saturates at ±448 (code 0x7e/0xfe): never a NaN code (0x7f/0xff).
    const b = new Uint8Array(q.length);
    for (let i = 0; i < q.length; i++) b[i] = f32ToFp8e4m3(mean + std * q[i]!);
    t = b;
  } else {
    throw new Error(`no random table for dtype ${dtype}`);
  }
  if (tables.size > 64) tables.clear();
  tables.set(key, t);
  return t;
}

/** xorshift32 seed of a tensor: FNV-1a of its name mixed with the seed (splitmix-style finalizer), never 0. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(Math.floor(seed / 2 ** 32) | 0, 0x85ebca6b);
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  return h === 0 ? 0x6d2b79f5 : h;
}

// Word generators: each 32-bit word of the output takes 1 (BF16: two 16-bit draws; F32: one) or 2
// (FP8: four draws) xorshift32 steps. They return the generator state to continue the stream.

function wordsBf16(w: Uint32Array, t: Uint16Array, s: number): number {
  for (let i = 0; i < w.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    w[i] = t[s & 0xffff]! | (t[s >>> 16]! << 16);
  }
  return s;
}

function wordsFp8(w: Uint32Array, t: Uint8Array, s: number): number {
  for (let i = 0; i < w.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    const lo = t[s & 0xffff]! | (t[s >>> 16]! << 8);
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    w[i] = lo | (t[s & 0xffff]! << 16) | (t[s >>> 16]! << 24);
  }
  return s;
}

function wordsF32(w: Uint32Array, t: Uint32Array, s: number): number {
  for (let i = 0; i < w.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    w[i] = t[s & 0xffff]!;
  }
  return s;
}

function words(dtype: DType, w: Uint32Array, t: Uint8Array | Uint16Array | Uint32Array, s: number): number {
  if (dtype === 'BF16') return wordsBf16(w, t as Uint16Array, s);
  if (dtype === 'F8_E4M3') return wordsFp8(w, t as Uint8Array, s);
  return wordsF32(w, t as Uint32Array, s);
}

const tailWord = new Uint32Array(1);

/**
 * Fills `dst` (4-byte aligned) with the next bytes of a tensor's stream. Every piece but a tensor's
 * last is a multiple of 4 bytes, so the bytes depend only on the tensor, not on how it is cut.
 */
function fillPiece(dst: Uint8Array, dtype: DType, t: Uint8Array | Uint16Array | Uint32Array, s: number): number {
  const whole = dst.byteLength >>> 2;
  s = words(dtype, new Uint32Array(dst.buffer, dst.byteOffset, whole), t, s);
  const rest = dst.byteLength - whole * 4;
  if (rest > 0) {
    s = words(dtype, tailWord, t, s);
    dst.set(new Uint8Array(tailWord.buffer, 0, rest), whole * 4);
  }
  return s;
}

// ---------------------------------------------------------------- writing

const BUFFER_BYTES = 16 << 20;

function checkOutDir(dir: string, force: boolean): void {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true });
    return;
  }
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (e) {
    throw new SyntheticCheckpointError(`cannot use output directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (entries.length === 0) return;
  if (!force) throw new SyntheticCheckpointError(`output directory ${dir} is not empty (pass force / --force to write into it)`);
  // Shards of an earlier run with another shard count would otherwise linger next to the new index.
  for (const f of entries) {
    if (f === INDEX_FILE || /^model(-\d{5}-of-\d{5})?\.safetensors$/.test(f)) rmSync(join(dir, f), { force: true });
  }
}

function fileSizeOf(tensors: readonly StoredTensor[], metadata: Record<string, string>): number {
  const { header, dataBytes } = layoutHeader(tensors, metadata);
  return lengthPrefix(header.byteLength).byteLength + header.byteLength + dataBytes;
}

/**
 * Writes a synthetic checkpoint of `config` (a config.json object; overrides in `opts`) into `outDir`:
 * config.json, the shards, the index (when more than one shard) and `opts.files`.
 */
export function writeSyntheticCheckpoint(outDir: string, config: Record<string, unknown>, opts: SyntheticOptions = {}): SyntheticSummary {
  const fill = opts.fill ?? 'random';
  if (fill !== 'random' && fill !== 'zeros') throw new SyntheticCheckpointError(`fill must be random or zeros, got ${JSON.stringify(fill)}`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new SyntheticCheckpointError(`seed must be an integer, got ${seed}`);
  // The generators write 32-bit words through a Uint32Array: byte order must be the file's (little-endian).
  if (fill === 'random' && endianness() !== 'LE') throw new SyntheticCheckpointError('random fill needs a little-endian machine');
  for (const f of Object.keys(opts.files ?? {})) {
    if (f.includes('/') || f.includes('\\') || f === '..' || f === '.' || f === 'config.json' || f === INDEX_FILE || f.endsWith('.safetensors')) {
      throw new SyntheticCheckpointError(`extra file name ${JSON.stringify(f)} must be a plain file name other than the checkpoint's own`);
    }
  }
  const plan = planCheckpoint(config, opts);
  const metadata = { format: 'pt' };
  const byShard: StoredTensor[][] = Array.from({ length: plan.shards }, () => []);
  plan.tensors.forEach((t, i) => byShard[plan.shardOf[i]!]!.push(t));
  const fileBytes = byShard.reduce((a, ts) => a + fileSizeOf(ts, metadata), 0);

  checkOutDir(outDir, opts.force ?? false);
  if (fill === 'random') {
    const st = statfsSync(outDir);
    const free = st.bavail * st.bsize;
    if (free < fileBytes) throw new SyntheticCheckpointError(`${outDir}: needs ${(fileBytes / 1e9).toFixed(2)} GB, ${(free / 1e9).toFixed(2)} GB free (--fill zeros writes sparse files)`);
  }

  const t0 = performance.now();
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  const buf = fill === 'random' ? new Uint8Array(BUFFER_BYTES) : new Uint8Array(0);
  let done = 0;
  for (let k = 0; k < plan.shards; k++) {
    const name = shardFileName(k, plan.shards);
    const tensors = byShard[k]!;
    const w = SafetensorsFileWriter.create(join(outDir, name), tensors, metadata);
    try {
      if (fill === 'zeros') {
        w.finishWithZeros();
        done += w.dataBytes;
        opts.onProgress?.(done, plan.dataBytes);
      } else {
        let p = 0;
        const flush = () => {
          w.write(buf.subarray(0, p));
          done += p;
          p = 0;
          opts.onProgress?.(done, plan.dataBytes);
        };
        for (const t of tensors) {
          // Generators write whole words: start each tensor on a 4-byte boundary of the buffer.
          if (p % 4 !== 0) flush();
          const tab = table(t.dtype, t.init.mean, t.init.std);
          let s = tensorSeed(seed, t.name);
          let left = bytesOf(t);
          while (left > 0) {
            if (p === buf.byteLength) flush();
            const n = Math.min(left, buf.byteLength - p);
            s = fillPiece(buf.subarray(p, p + n), t.dtype, tab, s);
            p += n;
            left -= n;
          }
        }
        if (p > 0) flush();
        w.finish();
      }
    } catch (e) {
      w.abort();
      throw e;
    }
    for (const t of tensors) weightMap[t.name] = name;
    files.push(name);
  }
  if (plan.shards > 1) {
    writeFileSync(join(outDir, INDEX_FILE), JSON.stringify({ metadata: { total_size: plan.dataBytes }, weight_map: weightMap }, null, 2) + '\n');
    files.push(INDEX_FILE);
  }
  writeFileSync(join(outDir, 'config.json'), JSON.stringify(plan.configJson, null, 2) + '\n');
  files.push('config.json');
  for (const [f, body] of Object.entries(opts.files ?? {})) {
    writeFileSync(join(outDir, f), body);
    files.push(f);
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    dir: outDir, files, shards: plan.shards, tensors: plan.tensors.length, dataBytes: plan.dataBytes, fileBytes,
    seconds, mbPerSec: seconds > 0 ? fileBytes / seconds / 1e6 : 0, fill, dtype: plan.dtype,
  };
}
