#!/usr/bin/env python3
# From `perf sched timehist` text (see open-sched.sh): every scheduling delay (wake-up to
# running) longer than THRESH ms of the tasks matching the regular expression PATTERN, longest
# first, with what ran on each CPU meanwhile (ms; `<idle>` on the task's own CPU means the guest
# had nothing to run there, so the vCPU was waiting for the host).
# Usage: sched-waits.py TIMEHIST PATTERN THRESH_MS
import re, sys, collections
path, pattern, thresh = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = []
for line in open(path):
    m = re.match(r'\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$', line)
    if not m: continue
    t, cpu, task, wait, delay, run = float(m[1]), int(m[2]), m[3].strip(), float(m[4]), float(m[5]), float(m[6])
    rows.append((t, cpu, task, wait, delay, run))
# Run intervals per cpu: (start, end, task)
runs = collections.defaultdict(list)
for t, cpu, task, wait, delay, run in rows:
    runs[cpu].append((t - run / 1000, t, task))
delays = [(t, cpu, task, delay) for t, cpu, task, wait, delay, run in rows if re.search(pattern, task) and delay > thresh]
tot = collections.Counter()
print(f"{len(delays)} delays > {thresh} ms of tasks /{pattern}/ (sum {sum(d for *_, d in delays):.1f} ms)")
for t, cpu, task, delay in sorted(delays, key=lambda x: -x[3])[:25]:
    a, b = t - delay / 1000, t
    who = collections.Counter()
    for c in runs:
        for s, e, other in runs[c]:
            ov = min(e, b) - max(s, a)
            if ov > 0 and other != task: who[(c, other)] += ov * 1000
    top = ", ".join(f"cpu{c} {o} {ms:.2f}" for (c, o), ms in who.most_common(4))
    print(f"{t:.6f} cpu{cpu} {task} waited {delay:.2f} ms; meanwhile: {top}")
    for (c, o), ms in who.items(): tot[re.sub(r'\[\d+(/\d+)?\]', '', o)] += ms
print("over all these delays, CPU time of others (ms):", ", ".join(f"{o} {ms:.1f}" for o, ms in tot.most_common(12)))
