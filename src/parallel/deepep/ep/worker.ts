// An expert-only rank (worker thread) of an expert-parallel model: loads its own experts from the
// checkpoint, reports ready, then serves one command per MoE layer from rank 0 until told to stop.
import { loadBackend } from '../../../kernels/index.ts';
import { refDeepGemm } from '../../../kernels/deepgemm/index.ts';
import { WasmDeepGemm } from '../../../kernels/deepgemm/wasm.ts';
import { Buffer } from '../buffer.ts';
import { int32View } from '../comm.ts';
import { runRank } from '../rank.ts';
import { loadRankExperts } from './experts.ts';
import { CMD_MOE, CMD_STOP, MODE_NORMAL, type ExpertRankData } from './protocol.ts';
import { moeStepAsync, type StepContext } from './step.ts';

await runRank<ExpertRankData, number>(async (ctx) => {
  const d = ctx.data;
  const per = d.numPhysical / ctx.size;
  const slots = new Map(d.phy2log.map(([layer, p2l]) => [layer, p2l.slice(ctx.rank * per, (ctx.rank + 1) * per)]));
  // One wasm runtime per rank (1 thread: the ranks themselves are the parallelism), experts in its memory.
  const wasm = d.backend === 'wasm' ? await WasmDeepGemm.create(1) : null;
  const gemm = wasm ?? refDeepGemm;
  const experts = loadRankExperts(d.modelDir, d.hidden, d.moeInter, slots, wasm ?? undefined);
  const kernels = await loadBackend('ref');
  const buf = new Buffer(ctx.comm);
  ctx.signal('ready');
  // Idle waits for the next command are unbounded (generation may pause); a pending Atomics.waitAsync
  // does not keep the thread alive by itself.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let steps = 0;
  try {
    for (;;) {
      const tag = ctx.comm.nextTag();
      const cmd = int32View(await ctx.comm.recv(0, tag, 'ep_command', 0), 0, 4);
      if (cmd[0] === CMD_STOP) break;
      if (cmd[0] !== CMD_MOE) throw new Error(`unknown expert-parallel command ${cmd[0]}`);
      const layer = cmd[1]!;
      const sc: StepContext = {
        buf, gemm, kernels, experts: experts.get(layer), hidden: d.hidden, numTopk: d.numTopk,
        numPhysical: d.numPhysical, maxTokensPerRank: d.maxTokensPerRank,
      };
      const none = { x: new Float32Array(0), T: 0, topk: new Int32Array(0), weights: new Float32Array(0) };
      await moeStepAsync(sc, cmd[2] === MODE_NORMAL ? 'normal' : 'low-latency', cmd[3]!, none);
      steps++;
    }
  } finally {
    clearInterval(keepAlive);
    await kernels.dispose();
    await wasm?.dispose();
  }
  return steps;
});
