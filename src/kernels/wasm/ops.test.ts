// The shared op suite on the wasm backend, with 1 and 2 threads (2 threads: matmul columns split).
import { runOpSuite } from '../ops.test-suite.ts';

runOpSuite('wasm', { threads: 1 });
runOpSuite('wasm', { threads: 2 });
