// Worker bootstrap: see worker.ts. Registers the TypeScript loader, then runs the requested module.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';
register();
await import(workerData.module);
