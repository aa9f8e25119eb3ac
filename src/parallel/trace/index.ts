// Chrome-trace recording and validation.
export * from './chrome-trace.ts';
export * from './validate.ts';
