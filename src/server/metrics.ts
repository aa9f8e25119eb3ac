// Prometheus metrics with vLLM's names (vllm/v1/metrics/loggers.py; docs/design/metrics.md), label
// model_name, on a registry of our own (no process-global state, so tests can start several servers).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine, SeqStats } from '../engine/engine.ts';

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'path' | 'status'>;
  private readonly ttft: Histogram<'model_name'>;
  private readonly itl: Histogram<'model_name'>;
  private readonly e2e: Histogram<'model_name'>;
  private readonly queue: Histogram<'model_name'>;
  private readonly prefill: Histogram<'model_name'>;
  private readonly decode: Histogram<'model_name'>;
  private readonly promptTokensH: Histogram<'model_name'>;
  private readonly genTokensH: Histogram<'model_name'>;
  private readonly promptTokens: Counter<'model_name'>;
  private readonly genTokens: Counter<'model_name'>;
  private readonly success: Counter<'model_name' | 'finished_reason'>;
  private readonly preemptions: Counter<'model_name'>;
  private readonly pcQueries: Counter<'model_name'>;
  private readonly pcHits: Counter<'model_name'>;
  /** Speculative decoding (vllm/v1/spec_decode/metrics.py), registered only when the runner drafts. */
  private readonly spec: {
    drafts: Counter<'model_name'>;
    draftTokens: Counter<'model_name'>;
    accepted: Counter<'model_name'>;
    perPos: Counter<'model_name' | 'position'>;
  } | null = null;
  private last = { preemptions: 0, queries: 0, hits: 0 };

  constructor(private readonly engine: Engine, private readonly modelName: string) {
    const r = [this.registry];
    const labelNames = ['model_name'] as const;
    const hist = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, labelNames, buckets, registers: r });
    const counter = (name: string, help: string) => new Counter({ name, help, labelNames, registers: r });
    this.ttft = hist('vllm:time_to_first_token_seconds', 'Time to first token (from arrival).', LATENCY_BUCKETS);
    this.itl = hist('vllm:inter_token_latency_seconds', 'Time between consecutive output tokens.', LATENCY_BUCKETS);
    this.e2e = hist('vllm:e2e_request_latency_seconds', 'Request latency from arrival to finish.', LATENCY_BUCKETS);
    this.queue = hist('vllm:request_queue_time_seconds', 'Time waiting before the first step.', LATENCY_BUCKETS);
    this.prefill = hist('vllm:request_prefill_time_seconds', 'Time from first step to first token.', LATENCY_BUCKETS);
    this.decode = hist('vllm:request_decode_time_seconds', 'Time from first token to finish.', LATENCY_BUCKETS);
    this.promptTokensH = hist('vllm:request_prompt_tokens', 'Prompt tokens per request.', TOKEN_BUCKETS);
    this.genTokensH = hist('vllm:request_generation_tokens', 'Generated tokens per request.', TOKEN_BUCKETS);
    this.promptTokens = counter('vllm:prompt_tokens_total', 'Prompt tokens processed.');
    this.genTokens = counter('vllm:generation_tokens_total', 'Tokens generated.');
    this.success = new Counter({ name: 'vllm:request_success_total', help: 'Finished requests by reason.', labelNames: ['model_name', 'finished_reason'], registers: r });
    this.preemptions = counter('vllm:num_preemptions_total', 'Sequences preempted (KV blocks ran out; recomputed later).');
    this.pcQueries = counter('vllm:prefix_cache_queries_total', 'Prompt tokens looked up in the prefix cache.');
    this.pcHits = counter('vllm:prefix_cache_hits_total', 'Prompt tokens found in the prefix cache.');
    const gauge = (name: string, help: string, get: () => number) =>
      new Gauge({ name, help, labelNames, registers: r, collect() { this.set({ model_name: modelName }, get()); } });
    gauge('vllm:num_requests_running', 'Sequences in the running batch.', () => engine.numRunning);
    gauge('vllm:num_requests_waiting', 'Sequences waiting to be scheduled.', () => engine.numWaiting);
    gauge('vllm:kv_cache_usage_perc', 'Fraction of KV blocks in use (0-1).', () => engine.kvUsage());
    // The process figures a soak watches, under prom-client's default-metric names (its collectDefaultMetrics
    // would also start an event-loop monitor per server, which never stops).
    const processGauge = (name: string, help: string, get: () => number) =>
      new Gauge({ name, help, registers: r, collect() { this.set(get()); } });
    processGauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => process.memoryUsage.rss());
    processGauge('nodejs_heap_size_used_bytes', 'V8 heap in use in bytes.', () => process.memoryUsage().heapUsed);
    processGauge('nodejs_heap_size_total_bytes', 'V8 heap size in bytes.', () => process.memoryUsage().heapTotal);
    processGauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JS objects (incl. ArrayBuffers) in bytes.', () => process.memoryUsage().external);
    this.httpRequests = new Counter({ name: 'http_requests_total', help: 'HTTP requests by route and status.', labelNames: ['method', 'path', 'status'], registers: r });
    const l = { model_name: modelName };
    for (const c of [this.promptTokens, this.genTokens, this.preemptions, this.pcQueries, this.pcHits]) c.inc(l, 0);

    const K = engine.runner.maxDraftTokens ?? 0;
    if (K > 0) {
      this.spec = {
        drafts: counter('vllm:spec_decode_num_drafts_total', 'Sequence steps verified with drafts.'),
        draftTokens: counter('vllm:spec_decode_num_draft_tokens_total', 'Draft tokens verified.'),
        accepted: counter('vllm:spec_decode_num_accepted_tokens_total', 'Draft tokens accepted.'),
        perPos: new Counter({ name: 'vllm:spec_decode_num_accepted_tokens_per_pos_total', help: 'Draft tokens accepted, by draft position (0-based).', labelNames: ['model_name', 'position'], registers: r }),
      };
      for (const c of [this.spec.drafts, this.spec.draftTokens, this.spec.accepted]) c.inc(l, 0);
      for (let j = 0; j < K; j++) this.spec.perPos.inc({ model_name: modelName, position: String(j) }, 0);
    }

    const prev = engine.observer;
    engine.observer = {
      onStep: (out, ms) => { prev.onStep?.(out, ms); this.syncEngineCounters(); },
      onSeqFinished: (s) => { prev.onSeqFinished?.(s); this.onSeq(s); },
      onSpec: (s) => {
        prev.onSpec?.(s);
        if (!this.spec) return;
        this.spec.drafts.inc(l, s.seqs);
        this.spec.draftTokens.inc(l, s.drafted);
        this.spec.accepted.inc(l, s.accepted);
        s.perPos.forEach((n, j) => { if (n) this.spec!.perPos.inc({ model_name: modelName, position: String(j) }, n); });
      },
    };
  }

  private syncEngineCounters(): void {
    const l = { model_name: this.modelName };
    const bm = this.engine.scheduler.blocks;
    const now = { preemptions: this.engine.scheduler.numPreemptions, queries: bm.queries * bm.blockSize, hits: bm.hits * bm.blockSize };
    if (now.preemptions > this.last.preemptions) this.preemptions.inc(l, now.preemptions - this.last.preemptions);
    if (now.queries > this.last.queries) this.pcQueries.inc(l, now.queries - this.last.queries);
    if (now.hits > this.last.hits) this.pcHits.inc(l, now.hits - this.last.hits);
    this.last = now;
  }

  private onSeq(s: SeqStats): void {
    const l = { model_name: this.modelName };
    this.syncEngineCounters();
    if (s.reason === 'abort' && s.firstToken === null) return;
    if (s.reason !== 'abort') this.success.inc({ model_name: this.modelName, finished_reason: s.reason });
    this.promptTokens.inc(l, s.promptTokens);
    this.genTokens.inc(l, s.outputTokens);
    this.promptTokensH.observe(l, s.promptTokens);
    this.genTokensH.observe(l, s.outputTokens);
    this.e2e.observe(l, (s.finished - s.arrival) / 1000);
    if (s.firstScheduled !== null) this.queue.observe(l, (s.firstScheduled - s.arrival) / 1000);
    if (s.firstToken !== null) {
      this.ttft.observe(l, (s.firstToken - s.arrival) / 1000);
      if (s.firstScheduled !== null) this.prefill.observe(l, (s.firstToken - s.firstScheduled) / 1000);
      this.decode.observe(l, (s.finished - s.firstToken) / 1000);
    }
    for (const ms of s.interTokenMs) this.itl.observe(l, ms / 1000);
  }

  async text(): Promise<string> {
    this.syncEngineCounters();
    return this.registry.metrics();
  }
}
