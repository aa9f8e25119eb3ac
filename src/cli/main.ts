// seekd command line. Each subcommand lives in ./commands/<name>.ts and exports `register(program)`;
// this file only wires them together and maps errors to exit codes (2 = usage, 1 = failure).
import { Command, CommanderError } from 'commander';
import { exitCodeOf } from './errors.ts';
import { COMMANDS } from './commands/index.ts';

export function buildProgram(): Command {
  const program = new Command('seekd')
    .description('Portable inference for DeepSeek-architecture models (TypeScript, WebAssembly SIMD, WebGPU)')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  for (const register of COMMANDS) register(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (help, version, or a usage error).
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    const msg = err instanceof Error ? `${err.name === 'Error' ? 'error' : err.name}: ${err.message}` : String(err);
    process.stderr.write(`seekd: ${msg.split('\n')[0]}\n`);
    // Errors that explain themselves at length (the memory plan) carry the rest as `details`.
    const details = (err as { details?: unknown } | null)?.details;
    if (typeof details === 'string') process.stderr.write(details + '\n');
    if (process.env.SEEKD_DEBUG) console.error(err);
    process.exitCode = exitCodeOf(err);
  }
}
