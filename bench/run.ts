// `npm run bench -- NAME [--json] [...options]`: runs bench/NAME.ts, whose default export is
// `(args: string[]) => Promise<BenchReport>`.
import { existsSync, readdirSync } from 'node:fs';
import { printReport, type BenchReport } from './lib/report.ts';

const argv = process.argv.slice(2);
const name = argv.find((a) => !a.startsWith('-'));
const json = argv.includes('--json');
const available = readdirSync(new URL('.', import.meta.url)).filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.endsWith('.test.ts')).map((f) => f.slice(0, -3));
if (!name || !existsSync(new URL(`./${name}.ts`, import.meta.url))) {
  console.error(`usage: npm run bench -- NAME [--json]   (NAME: ${available.join(', ') || 'none yet'})`);
  process.exit(2);
}
const mod = (await import(`./${name}.ts`)) as { default: (args: string[]) => Promise<BenchReport> };
const rest = argv.filter((a) => a !== name && a !== '--json');
let report: BenchReport;
try {
  report = await mod.default(rest);
} catch (e) {
  // Errors that carry an exit code (bad arguments, configs, checkpoints) are the user's to fix: one line.
  if (e instanceof Error && typeof (e as { exitCode?: unknown }).exitCode === 'number') {
    console.error(`bench ${name}: ${e.message}`);
    process.exit((e as unknown as { exitCode: number }).exitCode);
  }
  throw e;
}
printReport(report, json);
process.exit(0);
