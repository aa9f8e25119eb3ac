// `seekd quantize`: writes the FP8 checkpoint DeepSeek-V3 publishes from a BF16 / F16 / F32 one.
// The layout is DeepSeek's (and tiny-v3-fp8's): every projection inside a decoder block (isQuantizable:
// attention, dense MLP, shared and routed experts, also the MTP module's block) becomes F8_E4M3 codes
// plus `<name>_scale_inv` F32 [ceil(rows/128), ceil(cols/128)], computed by the same streaming
// quantizer `--quantize fp8` uses while loading (weights/quantize.ts), so loading the written file and
// quantizing while loading give the same bits. Everything else floating is stored BF16 (RNE), except
// the router's e_score_correction_bias, which DeepSeek keeps in F32 (its values sit near each other and
// decide expert choices: BF16 would merge them). Non-floating tensors are copied as stored.
// Memory: one tensor's FP8 codes at most (1 byte per weight) plus fixed staging buffers; tensors that
// are only converted stream through a 32 MiB buffer. The output is built in a temporary directory next
// to `outDir` and renamed into place, so a crash or an error never leaves a half-written model there.
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { endianness as osEndianness } from 'node:os';
import { basename, dirname, join, relative, resolve, isAbsolute, sep } from 'node:path';
import { decodeF16, DTYPE_BYTES, encodeBf16, isFloatDType, toF32, type DType } from '../tensor/dtypes.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import { SCALE_SUFFIX } from '../weights/pairing.ts';
import { Fp8StreamQuantizer, QUANT_BLOCK } from '../weights/quantize.ts';
import { layoutHeader, lengthPrefix, SafetensorsFileWriter, type TensorSpec as StoredSpec } from '../weights/writer.ts';
import { loadConfig, parseConfig } from './config.ts';
import { checkWeights } from './weight-map.ts';

/** What DeepSeek-V3's config.json says about its FP8 weights (key order as published). */
export const FP8_QUANTIZATION_CONFIG = {
  activation_scheme: 'dynamic',
  fmt: 'e4m3',
  quant_method: 'fp8',
  weight_block_size: [QUANT_BLOCK, QUANT_BLOCK],
} as const;

/** The single weights file written (small and large models alike: one file, no index). */
export const OUTPUT_FILE = 'model.safetensors';
/** `__metadata__` of the written file: torch's format tag plus who wrote it. */
export const OUTPUT_METADATA: Readonly<Record<string, string>> = { format: 'pt', producer: 'seekd quantize (fp8 e4m3, 128x128 block scales)' };

export type QuantizeCheckpointRule =
  | 'already-fp8' // an input tensor is FP8 (or an FP8 block scale): nothing to quantize
  | 'output-exists' // outDir exists and is not an empty directory, and force was not given
  | 'output-overlaps-input' // outDir is the input directory, inside it, or holds it
  | 'no-space' // the output filesystem has less free space than the file needs
  | 'unsupported-platform'; // a big-endian machine (the typed-array views assume little-endian files)

/** A checkpoint that cannot be quantized or an output that cannot be written: exit code 2 in the CLI. */
export class QuantizeCheckpointError extends Error {
  override name = 'QuantizeCheckpointError';
  readonly exitCode = 2;
  constructor(readonly rule: QuantizeCheckpointRule, message: string, readonly tensor?: string) {
    super(`${message} (${rule})`);
  }
}

export interface QuantizeCheckpointOptions {
  /** Replace an existing output directory (never the input one). */
  force?: boolean;
  /** Called after each tensor written, with input bytes done and in all. */
  onProgress?: (done: number, total: number) => void;
}

export interface QuantizeCheckpointSummary {
  /** The output directory. */
  dir: string;
  /** Tensors of the input checkpoint (every one is written; quantized ones add a scale each). */
  tensors: number;
  /** Of those, the ones now stored as FP8 (each with its `_scale_inv`). */
  quantized: number;
  /** Bytes of the input's safetensors files. */
  bytesIn: number;
  /** Bytes of the written model.safetensors. */
  bytesOut: number;
  seconds: number;
  /** Files of the output directory, in the order written. */
  files: string[];
}

/** How one input tensor is written. */
type Plan =
  | { kind: 'quantize'; name: string; rows: number; cols: number }
  | { kind: 'convert'; name: string; from: DType; to: 'BF16' | 'F32' }
  | { kind: 'copy'; name: string };

/** Files next to the weights that a model needs to be served: tokenizer, chat template, generation defaults. */
function isCompanionFile(f: string): boolean {
  return f.startsWith('tokenizer') || f === 'generation_config.json' || f.endsWith('.jinja');
}

/** True when `p` is `root` or below it (both absolute and resolved). */
function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** Real path of `p`, or of its nearest existing ancestor joined with the rest (for a path not made yet). */
function realish(p: string): string {
  const abs = resolve(p);
  let head = abs;
  const tail: string[] = [];
  while (!existsSync(head)) {
    const up = dirname(head);
    if (up === head) break;
    tail.unshift(basename(head));
    head = up;
  }
  return join(realpathSync(head), ...tail);
}

/** Refuses an output that would overwrite something without `force`, or that overlaps the input. */
function checkOutput(inDir: string, outDir: string, force: boolean): { exists: boolean } {
  const input = realpathSync(inDir);
  const out = realish(outDir);
  if (inside(input, out) || inside(out, input)) {
    throw new QuantizeCheckpointError('output-overlaps-input', `output ${outDir} overlaps the input model directory ${inDir}`);
  }
  let st;
  try {
    st = lstatSync(outDir);
  } catch {
    return { exists: false };
  }
  // An empty directory (e.g. one made for the output in advance) holds nothing to lose.
  const empty = st.isDirectory() && readdirSync(outDir).length === 0;
  if (!empty && !force) throw new QuantizeCheckpointError('output-exists', `output ${outDir} already exists (pass force / --force to replace it)`);
  return { exists: true };
}

/** Refuses an input that is already FP8: an F8_* tensor or a `*_scale_inv` block scale. */
function refuseFp8(ck: Checkpoint): void {
  for (const [name, t] of ck.tensors) {
    if (t.dtype.startsWith('F8_') || name.endsWith(SCALE_SUFFIX)) {
      throw new QuantizeCheckpointError('already-fp8', `${t.file}: tensor ${JSON.stringify(name)} is ${t.dtype}${name.endsWith(SCALE_SUFFIX) ? ' (an FP8 block scale)' : ''}: the input is already quantized; quantize its BF16 original instead`, name);
    }
  }
}

/** Decides how each tensor is written; throws before anything is written. */
function planTensors(ck: Checkpoint, quantizable: ReadonlySet<string>): Plan[] {
  const plans: Plan[] = [];
  for (const [name, t] of ck.tensors) {
    if (quantizable.has(name)) {
      const [rows, cols] = t.shape as [number, number];
      plans.push({ kind: 'quantize', name, rows, cols });
    } else if (isFloatDType(t.dtype)) {
      const to = name.endsWith('.e_score_correction_bias') ? 'F32' : 'BF16';
      plans.push(t.dtype === to ? { kind: 'copy', name } : { kind: 'convert', name, from: t.dtype, to });
    } else {
      plans.push({ kind: 'copy', name });
    }
  }
  return plans;
}

/** Output tensors (name, dtype, shape) in file order: each FP8 weight directly followed by its scale. */
function outputSpecs(ck: Checkpoint, plans: readonly Plan[]): StoredSpec[] {
  const specs: StoredSpec[] = [];
  for (const p of plans) {
    const t = ck.info(p.name);
    if (p.kind === 'quantize') {
      specs.push({ name: p.name, dtype: 'F8_E4M3', shape: [p.rows, p.cols] });
      specs.push({ name: p.name + SCALE_SUFFIX, dtype: 'F32', shape: [Math.ceil(p.rows / QUANT_BLOCK), Math.ceil(p.cols / QUANT_BLOCK)] });
    } else {
      specs.push({ name: p.name, dtype: p.kind === 'convert' ? p.to : t.dtype, shape: [...t.shape] });
    }
  }
  return specs;
}

/** Elements per piece when converting or copying (the read buffer holds this many of the widest dtype, F64: 32 MiB). */
const CHUNK_ELEMENTS = 4 << 20;

/** Streams one tensor's conversion (or plain copy) into the writer, CHUNK_ELEMENTS at a time. */
function writeConverted(ck: Checkpoint, w: SafetensorsFileWriter, p: Plan & { kind: 'convert' | 'copy' }, buf: ArrayBuffer): void {
  const t = ck.info(p.name);
  const eb = DTYPE_BYTES[t.dtype];
  const n = t.byteLength / eb;
  for (let i0 = 0; i0 < n; i0 += CHUNK_ELEMENTS) {
    const m = Math.min(CHUNK_ELEMENTS, n - i0);
    const raw = new Uint8Array(buf, 0, m * eb);
    ck.readRangeInto(p.name, i0 * eb, raw);
    if (p.kind === 'copy') { w.write(raw); continue; }
    // Widen to f32 (exact for BF16/F16; F64 rounds to f32 first), then round once to the target.
    const wide = t.dtype === 'F16' ? decodeF16(new Uint16Array(buf, 0, m)) : toF32(raw, t.dtype);
    if (p.to === 'F32') w.write(new Uint8Array(wide.buffer, wide.byteOffset, wide.byteLength));
    else {
      const bits = encodeBf16(wide);
      w.write(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
    }
  }
}

/**
 * Writes the FP8 version of the checkpoint in `inDir` to `outDir`: config.json (with DeepSeek's
 * quantization_config and torch_dtype bfloat16), one model.safetensors, and the tokenizer /
 * generation_config / chat-template files. The input is validated as the loader does (every header,
 * every tensor the config needs with its shape and an accepted dtype) before anything is written.
 * Throws QuantizeCheckpointError (FP8 input, existing or overlapping output, no space), ConfigError,
 * SafetensorsError, WeightError or Fp8QuantizeError (a non-finite weight).
 */
export function writeFp8Checkpoint(inDir: string, outDir: string, opts: QuantizeCheckpointOptions = {}): QuantizeCheckpointSummary {
  if (osEndianness() !== 'LE') throw new QuantizeCheckpointError('unsupported-platform', 'quantize needs a little-endian machine (safetensors data is little-endian)');
  const t0 = performance.now();
  const config = loadConfig(inDir);
  const rawConfig = JSON.parse(readFileSync(join(inDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const { exists } = checkOutput(inDir, outDir, opts.force ?? false);

  const ck = Checkpoint.open(inDir);
  let tmp: string | undefined;
  try {
    // Before the loader's checks, which would accept FP8 weights (or blame a missing quantization_config).
    refuseFp8(ck);
    const checked = checkWeights(ck, config, { quantize: 'fp8' });
    const quantizable = new Set(checked.filter((c) => c.load === 'quantize').map((c) => c.spec.name));
    const plans = planTensors(ck, quantizable);
    const specs = outputSpecs(ck, plans);
    const { header, dataBytes } = layoutHeader(specs, { ...OUTPUT_METADATA });
    const fileBytes = lengthPrefix(header.byteLength).byteLength + header.byteLength + dataBytes;
    const bytesIn = ck.files.reduce((a, f) => a + statSync(f).size, 0);

    const parent = dirname(resolve(outDir));
    mkdirSync(parent, { recursive: true });
    const st = statfsSync(parent);
    if (st.bavail * st.bsize < fileBytes) {
      throw new QuantizeCheckpointError('no-space', `${parent}: needs ${(fileBytes / 1e9).toFixed(2)} GB, ${((st.bavail * st.bsize) / 1e9).toFixed(2)} GB free`);
    }
    // Same parent directory: the final rename stays on one filesystem, so it is atomic.
    tmp = siblingDir(outDir, 'quantize');

    const files: string[] = [];
    const q = new Fp8StreamQuantizer();
    const buf = new ArrayBuffer(CHUNK_ELEMENTS * 8);
    const w = SafetensorsFileWriter.create(join(tmp, OUTPUT_FILE), specs, { ...OUTPUT_METADATA });
    const total = bytesInData(ck);
    let done = 0;
    try {
      for (const p of plans) {
        if (p.kind === 'quantize') {
          const codes = new Uint8Array(p.rows * p.cols);
          const scaleInv = new Float32Array(Math.ceil(p.rows / QUANT_BLOCK) * Math.ceil(p.cols / QUANT_BLOCK));
          q.quantizeTensor(ck, p.name, codes, scaleInv);
          w.write(codes);
          w.write(new Uint8Array(scaleInv.buffer));
        } else {
          writeConverted(ck, w, p, buf);
        }
        done += ck.info(p.name).byteLength;
        opts.onProgress?.(done, total);
      }
      w.finish();
    } catch (e) {
      w.abort();
      throw e;
    }
    files.push(OUTPUT_FILE);

    const outConfig = { ...rawConfig, torch_dtype: 'bfloat16', quantization_config: structuredClone(FP8_QUANTIZATION_CONFIG) };
    parseConfig(outConfig, join(outDir, 'config.json')); // what the loader will read must parse
    writeFileSync(join(tmp, 'config.json'), JSON.stringify(outConfig, null, 2) + '\n');
    files.push('config.json');
    for (const f of readdirSync(inDir).sort()) {
      if (!isCompanionFile(f) || !statSync(join(inDir, f)).isFile()) continue;
      copyFileSync(join(inDir, f), join(tmp, f));
      files.push(f);
    }

    if (exists) {
      // Move the old output aside first, so the new one appears in one rename; then drop the old one.
      const old = siblingDir(outDir, 'old');
      renameSync(outDir, join(old, 'out'));
      renameSync(tmp, outDir);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, outDir);
    }
    tmp = undefined;
    return {
      dir: outDir, tensors: ck.tensors.size, quantized: quantizable.size, bytesIn, bytesOut: fileBytes,
      seconds: (performance.now() - t0) / 1000, files,
    };
  } finally {
    ck.close();
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * A new hidden directory next to `outDir`. Not mkdtemp: its mode 0700 would become the output's, where
 * mkdir gives what the umask allows, as any other directory the user makes.
 */
function siblingDir(outDir: string, what: string): string {
  const p = join(dirname(resolve(outDir)), `.${basename(resolve(outDir))}.seekd-${what}-${process.pid}-${randomBytes(6).toString('hex')}`);
  mkdirSync(p);
  return p;
}

/** Data bytes of every input tensor (the progress total). */
function bytesInData(ck: Checkpoint): number {
  let n = 0;
  for (const t of ck.tensors.values()) n += t.byteLength;
  return n;
}
