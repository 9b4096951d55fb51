// BullMQ's side of `python -m bench.peers`: the same line protocol and the same
// measurements as bench/peers/driver.py and bench/peers/worker.py, in Node.
//
//   node bullmq.mjs driver                 one JSON command per stdin line, one JSON answer
//   node bullmq.mjs worker MODE [JSON]     a worker process (drain | e2e | first), set up
//                                          by $BENCH_REDIS_URL, $BENCH_NS, $BENCH_CONCURRENCY
//
// Jobs use attempts: 5 (BullMQ's default 1 never retries a failed job) and
// removeOnComplete: true (no result kept, as tidings deletes an acked entry). A job is
// completed after the processor returns; a stalled job (its worker's lock lapsed) is
// moved back to wait: at-least-once.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const QUEUE = 'job';
const JOB_OPTS = { attempts: 5, removeOnComplete: true };
const WORKER_TIMEOUT_S = 300;
const WARM_TIMEOUT_S = 60;
const SELF = fileURLToPath(import.meta.url);

// process.hrtime is CLOCK_MONOTONIC, the clock Python's time.monotonic() reads.
const now = () => Number(process.hrtime.bigint()) / 1e9;
const sleep = (s) => new Promise((resolve) => setTimeout(resolve, Math.max(0, s * 1000)));
const payload = (i) => ({ to: `user${i}@example.com`, template: 'welcome', vars: { name: 'Ada', n: i } });

function percentile(sorted, q) {
  const rank = ((sorted.length - 1) * q) / 100;
  const low = Math.floor(rank);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

function latencySummary(samples) {
  const s = [...samples].sort((a, b) => a - b);
  return { p50_ms: percentile(s, 50) * 1000, p99_ms: percentile(s, 99) * 1000, max_ms: s[s.length - 1] * 1000 };
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

const connect = (url) => new IORedis(url, { maxRetriesPerRequest: null });

function exitWithParent() {
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) process.exit(3); }, 500).unref();
}

// -- worker processes -----------------------------------------------------------------

function ctxFromEnv() {
  return { url: process.env.BENCH_REDIS_URL, ns: process.env.BENCH_NS,
           concurrency: Number(process.env.BENCH_CONCURRENCY) };
}

function markStarted() {
  const file = process.env.BENCH_MARK_FILE;
  if (!file || fs.existsSync(file)) return;
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, String(now()));
  fs.renameSync(tmp, file);
}

function startWorker(ctx, handle) {
  return new Worker(QUEUE, async (job) => handle(job.data),
    { connection: connect(ctx.url), prefix: ctx.ns, concurrency: ctx.concurrency });
}

async function workerMain(mode, spec) {
  exitWithParent();
  const ctx = ctxFromEnv();
  const say = (line) => process.stdout.write(line + '\n');
  if (mode === 'first') {
    startWorker(ctx, () => markStarted());
    return;
  }
  const n = spec.n;
  const skip = spec.skip || 0;
  const latencies = [];
  let count = 0;
  let started = 0;
  const handle = (body) => {
    const t = now();
    if (mode === 'e2e' && body.i < 0) { say('warm'); return; }
    if (mode === 'e2e' && body.i >= skip) latencies.push(t - body.ts);
    count += 1;
    if (count === n) {
      const result = mode === 'drain'
        ? { elapsed_s: t - started, msg_per_s: n / (t - started) }
        : { ...latencySummary(latencies), received: count };
      process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
    }
  };
  say('ready');
  if (mode === 'drain') {
    const rl = readline.createInterface({ input: process.stdin });
    const line = await new Promise((resolve) => rl.once('line', resolve));
    if (line.trim() !== 'go') process.exit(1);
  }
  started = now();
  startWorker(ctx, handle);
}

// -- the driver ---------------------------------------------------------------------

class Child {
  // A worker process in its own process group (group id = its PID), and its answer lines.
  constructor(argv, env, pipes = true) {
    this.proc = spawn(process.execPath, argv, {
      env: { ...process.env, ...env }, detached: true,
      stdio: pipes ? ['pipe', 'pipe', 'inherit'] : ['ignore', 'inherit', 'inherit'] });
    this.lines = [];
    this.waiters = [];
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => {
      this.code = code;
      for (const w of this.waiters.splice(0)) w(null);
      resolve(code);
    }));
    if (pipes) {
      readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
        const w = this.waiters.shift();
        if (w) w(line); else this.lines.push(line);
      });
    }
  }

  async line(timeoutS) {
    if (this.lines.length) return this.lines.shift();
    if (this.code !== undefined) throw new Error(`worker exited (status ${this.code}) without answering`);
    let timer;
    const got = await Promise.race([
      new Promise((resolve) => this.waiters.push(resolve)),
      new Promise((resolve) => { timer = setTimeout(() => resolve(undefined), timeoutS * 1000); }),
    ]);
    clearTimeout(timer);
    if (got === undefined) throw new Error(`worker gave no answer within ${timeoutS}s`);
    if (got === null) throw new Error(`worker exited (status ${this.code}) without answering`);
    return got.trim();
  }

  send(text) { this.proc.stdin.write(text + '\n'); }

  async stop() {
    for (const sig of ['SIGTERM', 'SIGKILL']) {
      if (this.code !== undefined) break;
      try { process.kill(-this.proc.pid, sig); } catch { break; }
      await Promise.race([this.exited, sleep(5)]);
    }
    try { process.kill(-this.proc.pid, 'SIGKILL'); } catch { /* the group is gone */ }
  }
}

function ctxOf(cmd) { return { url: cmd.url, ns: cmd.ns, concurrency: Number(cmd.concurrency) }; }

function workerEnv(ctx, extra = {}) {
  return { BENCH_REDIS_URL: ctx.url, BENCH_NS: ctx.ns, BENCH_CONCURRENCY: String(ctx.concurrency), ...extra };
}

async function withQueue(ctx, fn) {
  const connection = connect(ctx.url);
  const queue = new Queue(QUEUE, { connection, prefix: ctx.ns });
  await queue.waitUntilReady();
  try { return await fn(queue); } finally { await queue.close(); connection.disconnect(); }
}

async function publishAll(queue, n, chunk) {
  const t0 = performance.now();
  for (let start = 0; start < n; start += chunk) {
    const jobs = [];
    for (let i = start; i < Math.min(n, start + chunk); i++) jobs.push({ name: 'job', data: payload(i), opts: JOB_OPTS });
    await queue.addBulk(jobs);
  }
  return (performance.now() - t0) / 1000;
}

const OPS = {
  async single_publish(cmd) {
    return withQueue(ctxOf(cmd), async (queue) => {
      for (let i = 0; i < (cmd.warmup || 0); i++) await queue.add('job', payload(-1 - i), JOB_OPTS);
      const lat = [];
      const t0 = performance.now();
      for (let i = 0; i < cmd.n; i++) {
        const t = performance.now();
        await queue.add('job', payload(i), JOB_OPTS);
        lat.push((performance.now() - t) / 1000);
      }
      const elapsed = (performance.now() - t0) / 1000;
      return { msg_per_s: cmd.n / elapsed, ...latencySummary(lat) };
    });
  },

  async batch_publish(cmd) {
    return withQueue(ctxOf(cmd), async (queue) => ({ msg_per_s: cmd.n / await publishAll(queue, cmd.n, cmd.chunk) }));
  },

  async drain(cmd) {
    const ctx = ctxOf(cmd);
    await withQueue(ctx, (queue) => publishAll(queue, cmd.n, cmd.chunk));
    const worker = new Child([SELF, 'worker', 'drain', JSON.stringify({ n: cmd.n })], workerEnv(ctx));
    try {
      if (await worker.line(WARM_TIMEOUT_S) !== 'ready') throw new Error('worker did not say ready');
      worker.send('go');
      return JSON.parse(await worker.line(WORKER_TIMEOUT_S));
    } finally { await worker.stop(); }
  },

  async e2e_latency(cmd) {
    const ctx = ctxOf(cmd);
    const n = Math.trunc(cmd.rate * cmd.seconds);
    return withQueue(ctx, async (queue) => {
      const worker = new Child([SELF, 'worker', 'e2e', JSON.stringify({ n, skip: cmd.skip })], workerEnv(ctx));
      try {
        await worker.line(WARM_TIMEOUT_S);
        await queue.add('job', { i: -1, ts: now() }, JOB_OPTS);
        if (await worker.line(WARM_TIMEOUT_S) !== 'warm') throw new Error('worker did not handle the warm-up job');
        const start = now();
        for (let i = 0; i < n; i++) {
          const wait = start + i / cmd.rate - now();
          if (wait > 0) await sleep(wait);
          await queue.add('job', { i, ts: now(), ...payload(i) }, JOB_OPTS);
        }
        return JSON.parse(await worker.line(WORKER_TIMEOUT_S));
      } finally { await worker.stop(); }
    });
  },

  async startup(cmd) {
    const times = [];
    for (let k = 0; k < cmd.spawns; k++) {
      const ctx = { ...ctxOf(cmd), ns: `${cmd.ns}-${k}` };
      await withQueue(ctx, (queue) => queue.add('job', payload(0), JOB_OPTS));
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-peers-'));
      const mark = path.join(dir, 'first');
      const started = now();
      const worker = new Child([SELF, 'worker', 'first'], workerEnv(ctx, { BENCH_MARK_FILE: mark }), false);
      try {
        while (!fs.existsSync(mark)) {
          if (worker.code !== undefined) throw new Error(`start-up worker exited with status ${worker.code}`);
          if (now() - started > WARM_TIMEOUT_S) throw new Error(`no handler ran within ${WARM_TIMEOUT_S}s`);
          await sleep(0.002);
        }
        times.push(Number(fs.readFileSync(mark, 'utf8')) - started);
      } finally {
        await worker.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
    return { seconds: median(times), min_s: Math.min(...times), max_s: Math.max(...times) };
  },
};

async function driverMain() {
  exitWithParent();
  const require = (await import('node:module')).createRequire(import.meta.url);
  const versions = Object.fromEntries(['bullmq', 'ioredis'].map((p) => [p, require(`${p}/package.json`).version]));
  versions.node = process.versions.node;
  const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
  out({ ready: true, versions, pid: process.pid,
        setup: 'Queue(prefix=ns).add(job, payload, {attempts: 5, removeOnComplete: true}); bulk: '
             + 'addBulk(chunk); Worker(concurrency=C); job completed after the processor '
             + 'returns; start-up: a fresh `node bullmq.mjs worker` process' });
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const cmd = JSON.parse(line);
    try {
      out({ ok: true, metrics: await OPS[cmd.op](cmd) });
    } catch (err) {
      out({ ok: false, error: `${err.name}: ${err.message}` });
    }
  }
  process.exit(0);
}

const [role, mode, spec] = process.argv.slice(2);
if (role === 'driver') await driverMain();
else if (role === 'worker') await workerMain(mode, spec ? JSON.parse(spec) : {});
else { console.error('usage: node bullmq.mjs driver | worker MODE [JSON]'); process.exit(2); }
