// Errors the CLI turns into a one-line message and an exit code, never a stack trace.

/** Wrong arguments or input the user can fix: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Any error class may carry `exitCode` to choose its exit status; the default for failures is 1. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return 2;
  const code = (err as { exitCode?: unknown } | null)?.exitCode;
  return typeof code === 'number' ? code : 1;
}
