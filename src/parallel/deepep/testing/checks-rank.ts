// Rank program for the DeepEP semantic checks (thread or process rank; see launch.ts).
import { runRank } from '../rank.ts';
import { runDeepEPChecks, type CheckParams } from './checks.ts';

await runRank<CheckParams, number>((ctx) => runDeepEPChecks(ctx.comm, ctx.data));
