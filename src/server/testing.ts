// Test helpers: a server over the built-in tokenizer with either the fake model (fast, protocol
// tests) or the real built-in DeepSeek model (integration), on an ephemeral loopback port.
import { buildTokenizerFiles } from '../engine/builtin/tokenizer-files.ts';
import type { EngineConfig } from '../engine/engine.ts';
import { Llm } from '../engine/llm.ts';
import { FakeRunner } from '../engine/testing/fake-runner.ts';
import { ChatTokenizer } from '../engine/tokenizer.ts';
import { startServer, type RunningServer, type StartOptions } from './http.ts';

let cachedTok: ChatTokenizer | null = null;

export function builtinTokenizer(): ChatTokenizer {
  if (!cachedTok) {
    const f = buildTokenizerFiles(2048, 4096);
    cachedTok = new ChatTokenizer(f.tokenizerJson, f.tokenizerConfig);
  }
  return cachedTok;
}

export async function startFakeServer(
  opts: StartOptions & { engine?: Partial<EngineConfig>; numBlocks?: number; delayMs?: number } = {},
): Promise<RunningServer & { llm: Llm; runner: FakeRunner }> {
  const runner = new FakeRunner(2048, opts.numBlocks ?? 256, opts.delayMs ?? 0);
  const llm = Llm.fromParts('seekd-test', runner, builtinTokenizer(), {
    maxModelLen: 1024, maxNumSeqs: 16, maxNumBatchedTokens: 256, maxWaiting: 64, ...opts.engine,
  });
  const srv = await startServer({ port: 0, webDir: null, ...opts }, llm);
  return Object.assign(srv, { llm, runner });
}
