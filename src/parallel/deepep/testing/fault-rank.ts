// Rank program for the fault tests: every rank enters a normal-mode dispatch, except `victim`, which
// receives the survivors' dispatch messages, signals the launcher and then stops answering (the test
// kills it, or leaves it hanging).
import { Buffer } from '../buffer.ts';
import { runRank } from '../rank.ts';

export interface FaultParams {
  victim: number;
  T: number;
  H: number;
}

await runRank<FaultParams, string>(async (ctx) => {
  const { victim, T, H } = ctx.data;
  if (ctx.rank === victim) {
    ctx.signal('victim-ready');
    // Take the survivors' dispatch messages (the first collective's tag): once they are here, every survivor
    // has issued its sends and waits on this rank. The test kills it on this signal, so the death falls
    // inside their dispatch by construction (no timing involved).
    const others = Array.from({ length: ctx.size }, (_, r) => r).filter((r) => r !== victim);
    await ctx.comm.recvAll(others, ctx.comm.nextTag(), 'dispatch', 0);
    ctx.signal('victim-has-data');
    await new Promise(() => setInterval(() => undefined, 1000)); // never answers
  }
  const buf = new Buffer(ctx.comm);
  const E = 4 * ctx.size;
  const idx = new Int32Array(T).map((_, t) => t % E);
  const layout = buf.getDispatchLayout(idx, E, 1);
  ctx.signal('in-dispatch');
  await buf.dispatch({ dtype: 'f32', hidden: H, data: new Float32Array(T * H).fill(1) }, idx, new Float32Array(T).fill(1), layout);
  return 'dispatch completed';
});
