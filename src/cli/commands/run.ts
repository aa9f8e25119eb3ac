// `seekd run [PROMPT]`: chat in the terminal with the engine in-process. Streams the answer; reasoning
// (R1-style <think>…</think>, see --thinking) is shown dimmed on a terminal. With PROMPT it answers
// once and exits; otherwise it reads one message per line (from a terminal or a pipe) until EOF or
// /bye. /clear starts a new conversation.
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import { ChatOutputParser } from '../../engine/chat-output.ts';
import { defaultSamplingParams } from '../../engine/contracts.ts';
import type { Llm } from '../../engine/llm.ts';
import type { ChatMessage } from '../../engine/tokenizer.ts';
import { UsageError } from '../errors.ts';
import { engineEpOptions, intOpt, loadLlm, type EngineCliOptions } from './serve.ts';

interface RunOptions extends EngineCliOptions {
  thinking?: boolean;
  maxTokens: string;
  temperature: string;
  seed?: string;
  system?: string;
}

const DIM = '\x1b[2m';
const RESET = '\x1b[0m';

async function answer(llm: Llm, history: ChatMessage[], opts: RunOptions, out: NodeJS.WriteStream): Promise<string> {
  const rendered = llm.renderChat(history, undefined, { thinking: opts.thinking === true });
  const room = llm.maxModelLen - rendered.ids.length;
  if (room < 1) throw new UsageError(`the conversation (${rendered.ids.length} tokens) fills the context (${llm.maxModelLen}); /clear to start over`);
  const temperature = Number(opts.temperature);
  if (!Number.isFinite(temperature) || temperature < 0 || temperature > 2) throw new UsageError(`--temperature must be in [0, 2], got '${opts.temperature}'`);
  const params = defaultSamplingParams({
    temperature, topP: 0.95, maxTokens: Math.min(intOpt('max-tokens', opts.maxTokens)!, room), seed: opts.seed === undefined ? null : intOpt('seed', opts.seed, 0)!,
  });
  const tty = out.isTTY === true;
  const parser = new ChatOutputParser({ reasoning: llm.tokenizer.thinkStart !== null, thinking: rendered.thinking, tools: false });
  let content = '';
  let inReasoning = false;
  const write = (d: { reasoning: string; content: string }) => {
    if (d.reasoning) {
      if (!inReasoning) { out.write(tty ? DIM : '[reasoning] '); inReasoning = true; }
      out.write(d.reasoning);
    }
    if (d.content) {
      if (inReasoning) { out.write(tty ? `${RESET}\n` : '\n[answer] '); inReasoning = false; }
      out.write(d.content);
      content += d.content;
    }
  };
  for await (const d of llm.engine.generate({ prompt: rendered.ids, params })) {
    if (d.type === 'text') write(parser.push(d.text));
  }
  write(parser.finish());
  if (inReasoning && tty) out.write(RESET);
  out.write('\n');
  return content;
}

export function register(program: Command): void {
  engineEpOptions(program.command('run').description('chat with a model in the terminal (streams; reasoning dimmed)').argument('[prompt]', 'answer this once and exit'))
    .option('--thinking', 'open <think> in the prompt (R1-style reasoning)')
    .option('--max-tokens <n>', 'tokens per answer at most', '256')
    .option('--temperature <t>', 'sampling temperature', '0.7')
    .option('--seed <n>', 'sampling seed')
    .option('--system <text>', 'system prompt')
    .action(async (prompt: string | undefined, opts: RunOptions) => {
      const llm = await loadLlm(opts, false);
      const out = process.stdout;
      const history: ChatMessage[] = opts.system ? [{ role: 'system', content: opts.system }] : [];
      try {
        if (!opts.model) process.stderr.write('seekd: note: the built-in model has RANDOM weights; its answers are meaningless\n');
        if (prompt !== undefined) {
          history.push({ role: 'user', content: prompt });
          await answer(llm, history, opts, out);
          return;
        }
        const interactive = process.stdin.isTTY === true;
        if (interactive) process.stderr.write('Type a message (/clear: new chat, /bye: quit).\n');
        const rl = createInterface({ input: process.stdin, terminal: false });
        if (interactive) process.stdout.write('>>> ');
        for await (const line of rl) {
          const text = line.trim();
          if (text === '/bye' || text === '/exit') break;
          if (text === '/clear') {
            history.splice(opts.system ? 1 : 0);
            process.stderr.write('(new chat)\n');
          } else if (text) {
            history.push({ role: 'user', content: text });
            const reply = await answer(llm, history, opts, out);
            history.push({ role: 'assistant', content: reply });
          }
          if (interactive) process.stdout.write('>>> ');
        }
      } finally {
        await llm.close();
      }
    });
}
