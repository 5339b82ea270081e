#!/usr/bin/env node
// The rate-limiter-flexible side of scripts/vs-rlf.sh: drives `RateLimiterRedis.consume` over
// one ioredis connection from N concurrent callers (async loops on Node's one event loop), each
// decision for one of K keys picked at random, closed loop, for a set time after a warm-up; then
// prints one JSON object with the same fields as `tollgate-bench --json` where they mean the
// same thing (decisions_per_s, latency, client CPU, and the server's CPU and script calls per
// decision from INFO cpu / INFO commandstats over the measured time).
//
// The limit mirrors tollgate-bench's default `--limits 1`: requests per minute with a budget no
// run can exhaust (points 10^9 per 60 s), so every call is admitted and every key keeps its state.
//
// Usage: node rlf-bench.js --redis URL [-c 50] [-d 10] [--warmup 1] [--keys 10000] [--prefix P]
'use strict';

const { RateLimiterRedis } = require('rate-limiter-flexible');
const Redis = require('ioredis');

function parseArgs(argv) {
  const opts = { redis: null, concurrency: 50, duration: 10, warmup: 1, keys: 10000, prefix: 'rlf-bench', points: 1e9, per: 60 };
  const names = { '--redis': 'redis', '-c': 'concurrency', '--concurrency': 'concurrency', '-d': 'duration', '--duration': 'duration', '--warmup': 'warmup', '--keys': 'keys', '--prefix': 'prefix', '--points': 'points', '--per': 'per' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = names[argv[i]];
    if (!name || i + 1 >= argv.length) throw new Error(`rlf-bench: unknown option or missing value: ${argv[i]}`);
    const v = argv[i + 1];
    if (name === 'redis' || name === 'prefix') {
      opts[name] = v;
    } else {
      // Durations may be written as tollgate-bench takes them (`10s`).
      const n = Number(v.replace(/s$/, ''));
      if (!Number.isFinite(n) || n <= 0) throw new Error(`rlf-bench: ${argv[i]} must be a positive number, not ${JSON.stringify(v)}`);
      opts[name] = n;
    }
  }
  if (!opts.redis) throw new Error('rlf-bench: --redis URL is required (the tool never picks a server by itself)');
  return opts;
}

// Redis CPU (user + system, all threads) and per-command calls/µs, as tollgate-bench reads them.
async function serverSnapshot(redis) {
  const cpu = await redis.info('cpu');
  let cpuS = 0;
  for (const line of cpu.split('\r\n')) {
    const [k, v] = line.split(':');
    if (k === 'used_cpu_sys' || k === 'used_cpu_user') cpuS += Number(v);
  }
  const stats = await redis.info('commandstats');
  const commands = {};
  for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+),/gm)) {
    commands[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  }
  // Read and write events and network bytes, as tollgate-bench's reads_per_decision etc.
  const io = {};
  for (const line of (await redis.info('stats')).split('\r\n')) {
    const [k, v] = line.split(':');
    if (/^total_(reads|writes)_processed$|^total_net_(input|output)_bytes$/.test(k)) io[k] = Number(v);
  }
  return { cpuS, commands, io };
}

function machineBusyS() {
  const line = require('fs').readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/);
  const f = line.slice(1).map(Number);
  // user nice system irq softirq steal, in USER_HZ (100 per second).
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100;
}

function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

const round2 = (v) => Math.round(v * 100) / 100;

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  // One connection, as an application shares one ioredis client; ioredis pipelines the
  // commands of concurrent callers on it (its default, no auto-pipelining option).
  const redis = new Redis(opts.redis, { enableOfflineQueue: true, maxRetriesPerRequest: 0 });
  const stats = new Redis(opts.redis);
  const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: opts.prefix, points: opts.points, duration: opts.per });

  let phase = 'warmup';
  let decisions = 0;
  let allowed = 0;
  let denied = 0;
  let errors = 0;
  let firstError = null;
  let lat = new Float64Array(1 << 20);
  let nlat = 0;

  async function caller() {
    while (phase !== 'done') {
      const key = String(Math.floor(Math.random() * opts.keys));
      const t0 = process.hrtime.bigint();
      let ok = true;
      let err = false;
      try {
        await limiter.consume(key, 1);
      } catch (e) {
        if (e instanceof Error) {
          err = true;
          if (!firstError) firstError = String(e);
        } else {
          ok = false; // a RateLimiterRes: denied
        }
      }
      if (phase !== 'measure') continue;
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      decisions += 1;
      if (err) errors += 1;
      else if (ok) allowed += 1;
      else denied += 1;
      if (nlat === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[nlat++] = us;
    }
  }

  const callers = [];
  for (let i = 0; i < opts.concurrency; i++) callers.push(caller());
  await new Promise((r) => setTimeout(r, opts.warmup * 1000));

  const before = await serverSnapshot(stats);
  const cpu0 = process.cpuUsage();
  const busy0 = machineBusyS();
  const t0 = process.hrtime.bigint();
  phase = 'measure';
  await new Promise((r) => setTimeout(r, opts.duration * 1000));
  phase = 'done';
  const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu1 = process.cpuUsage(cpu0);
  const busy1 = machineBusyS();
  const after = await serverSnapshot(stats);
  await Promise.all(callers);

  const per = (v) => v / Math.max(decisions, 1);
  const delta = (cmd) => {
    const a = after.commands[cmd] || { calls: 0, usec: 0 };
    const b = before.commands[cmd] || { calls: 0, usec: 0 };
    return { calls: a.calls - b.calls, usec: a.usec - b.usec };
  };
  const evalsha = delta('evalsha');
  const evalCmd = delta('eval');
  const serverCpuS = Math.max(after.cpuS - before.cpuS, 0);
  const clientCpuS = (cpu1.user + cpu1.system) / 1e6;
  const sorted = lat.subarray(0, nlat).sort();
  const mean = sorted.reduce((s, v) => s + v, 0) / Math.max(nlat, 1);
  const versions = {
    node: process.version,
    'rate-limiter-flexible': require('rate-limiter-flexible/package.json').version,
    ioredis: require('ioredis/package.json').version,
  };
  console.log(JSON.stringify({
    tool: 'rate-limiter-flexible',
    versions,
    mode: 'closed',
    limits: 1,
    concurrency: opts.concurrency,
    tenants: opts.keys,
    elapsed_s: round2(elapsedS),
    decisions,
    decisions_per_s: Math.round(decisions / elapsedS),
    allowed,
    denied,
    errors,
    first_error: firstError,
    latency: {
      count: nlat,
      mean_us: round2(mean),
      p50_us: round2(percentile(sorted, 0.5)),
      p99_us: round2(percentile(sorted, 0.99)),
      p999_us: round2(percentile(sorted, 0.999)),
      max_us: round2(nlat ? sorted[nlat - 1] : 0),
    },
    client_cpu_s: round2(clientCpuS),
    client_cpu_usec_per_decision: round2(per(clientCpuS * 1e6)),
    machine_busy_s: round2(busy1 - busy0),
    other_cpu_s: round2(Math.max(busy1 - busy0 - clientCpuS - serverCpuS, 0)),
    server: {
      evalsha_calls: evalsha.calls,
      evalsha_usec_per_call: evalsha.calls ? round2(evalsha.usec / evalsha.calls) : null,
      eval_calls: evalCmd.calls,
      script_calls_per_decision: round2(per(evalsha.calls + evalCmd.calls)),
      script_usec_per_decision: round2(per(evalsha.usec + evalCmd.usec)),
      reads_per_decision: round2(per(after.io.total_reads_processed - before.io.total_reads_processed)),
      writes_per_decision: round2(per(after.io.total_writes_processed - before.io.total_writes_processed)),
      bytes_in_per_decision: round2(per(after.io.total_net_input_bytes - before.io.total_net_input_bytes)),
      bytes_out_per_decision: round2(per(after.io.total_net_output_bytes - before.io.total_net_output_bytes)),
      cpu_s: round2(serverCpuS),
      cpu_usec_per_decision: round2(per(serverCpuS * 1e6)),
    },
  }));
  redis.disconnect();
  stats.disconnect();
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
