// Checkpoint loading costs: header validation speed, tensor read bandwidth from the page cache, and
// the dtype decoders. Baselines, measured by this process: memory-copy bandwidth (bench/lib) and
// JSON.parse on the same header text.
// - header: a synthetic header shaped like a DeepSeek-V3 shard (N tensors with V3-like names), parsed
//   by the strict reader (parseHeader, full validation) vs JSON.parse alone (no validation, no
//   duplicate detection); ratio = our MB/s / JSON.parse MB/s.
// - read: readInto of 64 MiB tensors of a 256 MiB file that is in the page cache; a file read copies
//   each byte once (kernel page cache -> user), i.e. 2 bytes of memory traffic per byte, so
//   ratio = 2 x read bandwidth / copy bandwidth (1 = as fast as a memcpy).
// - decode: bf16 / fp8 -> f32 widening (input bytes + output bytes per second) vs copy bandwidth.
// Options: --tensors N (header size, default 2000), --mib M (file size, default 256).
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeBf16, decodeFp8e4m3 } from '../src/tensor/dtypes.ts';
import { parseHeader, SafetensorsFile } from '../src/weights/safetensors.ts';
import { layoutHeader, lengthPrefix, type TensorSpec } from '../src/weights/writer.ts';
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import { median, timeRuns, type BenchReport } from './lib/report.ts';

function opt(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

/** V3-like tensor names and shapes: experts of a few layers, F8 weights with F32 scales. */
function v3LikeSpecs(n: number): TensorSpec[] {
  const specs: TensorSpec[] = [];
  for (let i = 0; specs.length < n; i++) {
    const layer = 3 + Math.floor(i / 256), e = i % 256;
    for (const p of ['gate_proj', 'up_proj', 'down_proj']) {
      const shape = p === 'down_proj' ? [7168, 2048] : [2048, 7168];
      specs.push({ name: `model.layers.${layer}.mlp.experts.${e}.${p}.weight`, dtype: 'F8_E4M3', shape });
      specs.push({ name: `model.layers.${layer}.mlp.experts.${e}.${p}.weight_scale_inv`, dtype: 'F32', shape: shape.map((d) => Math.ceil(d / 128)) });
    }
  }
  return specs.slice(0, n);
}

export default async function weightsBench(args: string[]): Promise<BenchReport> {
  const nTensors = opt(args, 'tensors', 2000);
  const mib = opt(args, 'mib', 256);
  const copy1 = await copyBandwidthGBs(1);
  const rows: BenchReport['rows'] = [];

  // ---- header validation
  const { header, dataBytes } = layoutHeader(v3LikeSpecs(nTensors));
  const text = new TextDecoder().decode(header);
  const hb = header.byteLength;
  const ours = median(timeRuns(() => { parseHeader('bench', header, 8 + hb, 8 + hb + dataBytes); }, 9, 2));
  const base = median(timeRuns(() => { JSON.parse(text); }, 9, 2));
  rows.push({ case: `header ${nTensors} tensors (${(hb / 1e6).toFixed(2)} MB)`, threads: 1, metric: 'parse+validate', value: hb / ours / 1e6, unit: 'MB/s', ratio: base / ours });
  rows.push({ case: `header ${nTensors} tensors`, threads: 1, metric: 'JSON.parse only', value: hb / base / 1e6, unit: 'MB/s', ratio: null });

  // ---- tensor reads from the page cache
  const dir = mkdtempSync(join(tmpdir(), 'seekd-bench-weights-'));
  try {
    const per = 64 << 20;
    const count = Math.max(1, Math.round((mib << 20) / per));
    const specs: TensorSpec[] = Array.from({ length: count }, (_, i) => ({ name: `t${i}`, dtype: 'BF16', shape: [per / 2] }));
    const lay = layoutHeader(specs);
    const path = join(dir, 'model.safetensors');
    const fd = openSync(path, 'w');
    const chunk = new Uint8Array(per);
    for (let i = 0; i < chunk.length; i += 4096) chunk[i] = i & 0xff; // real pages, not holes
    try {
      writeSync(fd, lengthPrefix(lay.header.byteLength));
      writeSync(fd, lay.header);
      for (let i = 0; i < count; i++) writeSync(fd, chunk);
    } finally {
      closeSync(fd);
    }
    const f = SafetensorsFile.open(path);
    const dest = new Uint8Array(per);
    const readAll = (): void => { for (const s of specs) f.readInto(s.name, dest); };
    const t = median(timeRuns(readAll, 5, 1));
    const gbs = (count * per) / t / 1e9;
    rows.push({ case: `readInto ${count} x 64 MiB (page cache)`, threads: 1, metric: 'bandwidth', value: gbs, unit: 'GB/s', ratio: (2 * gbs) / copy1 });
    const tb = median(timeRuns(() => { for (const s of specs) f.readBytes(s.name); }, 5, 1));
    const gbsB = (count * per) / tb / 1e9;
    rows.push({ case: `readBytes ${count} x 64 MiB (page cache)`, threads: 1, metric: 'bandwidth', value: gbsB, unit: 'GB/s', ratio: (2 * gbsB) / copy1 });
    f.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // ---- decoders (16 M elements)
  const n = 16 << 20;
  const bf = new Uint16Array(n).map((_, i) => (i * 2654435761) >>> 16);
  const q = new Uint8Array(n).map((_, i) => (i * 2654435761) >>> 24);
  const out = new Float32Array(n);
  const tBf = median(timeRuns(() => { decodeBf16(bf, out); }, 5, 1));
  const tQ = median(timeRuns(() => { decodeFp8e4m3(q, out); }, 5, 1));
  rows.push({ case: 'decode bf16 -> f32, 16M', threads: 1, metric: 'bandwidth', value: (6 * n) / tBf / 1e9, unit: 'GB/s', ratio: (6 * n) / tBf / 1e9 / copy1 });
  rows.push({ case: 'decode fp8 e4m3 -> f32, 16M', threads: 1, metric: 'bandwidth', value: (5 * n) / tQ / 1e9, unit: 'GB/s', ratio: (5 * n) / tQ / 1e9 / copy1 });

  return {
    bench: 'weights',
    baseline: { copy_GBs_1thread: copy1 },
    rows,
    notes: [
      'header ratio = strict parse+validate throughput / JSON.parse throughput (JSON.parse alone would miss duplicate keys)',
      'read ratio = 2 x read bandwidth / copy bandwidth (a read moves each byte once from the page cache)',
      'decode ratio = (input+output bytes)/s / copy bandwidth',
    ],
  };
}
