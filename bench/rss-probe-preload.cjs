// Preloaded (`node --require`) into a served hubcache by bench/rss-ab.ts with BENCH_RSS_PROBE=1.
// On SIGUSR2 it reads the request file $RSS_PROBE_OUT.req and writes its answer to $RSS_PROBE_OUT:
//   `nogc`:   process.memoryUsage() and the V8 heap spaces;
//   `sample`: the same, then starts V8's sampling heap profiler keeping the samples of objects that
//             survived the scavenges (includeObjectsCollectedByMajorGC; those the young generation's
//             GC collects are dropped): what the load promotes to the old generation, garbage included;
//   `gc`:     the same as `nogc`, the sampled profile if one runs ($RSS_PROBE_OUT.heapprofile), and
//             (with --expose-gc) the figures after a full GC, and a heap snapshot when
//             $RSS_PROBE_SNAPSHOT names a prefix.
// Diagnostics only: nothing in src/ loads it.
'use strict';
const v8 = require('node:v8');
const fs = require('node:fs');
const inspector = require('node:inspector');
let session;
const spaces = () => v8.getHeapSpaceStatistics().map((s) => ({ name: s.space_name, size: s.space_size, used: s.space_used_size }));
process.on('SIGUSR2', () => {
  const out = process.env.RSS_PROBE_OUT;
  if (!out) return;
  let req = '';
  try {
    req = fs.readFileSync(`${out}.req`, 'utf8').trim();
  } catch {}
  const answer = { before: process.memoryUsage(), spaces: spaces() };
  const finish = () => {
    if (req === 'gc' && typeof globalThis.gc === 'function') {
      globalThis.gc();
      answer.afterGc = process.memoryUsage();
      answer.spacesAfterGc = spaces();
    }
    if (req === 'gc' && process.env.RSS_PROBE_SNAPSHOT) answer.snapshot = v8.writeHeapSnapshot(`${process.env.RSS_PROBE_SNAPSHOT}-${process.pid}.heapsnapshot`);
    fs.writeFileSync(`${out}.tmp`, JSON.stringify(answer));
    fs.renameSync(`${out}.tmp`, out);
  };
  if (req === 'sample') {
    session = new inspector.Session();
    session.connect();
    session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true }, finish);
  } else if (req === 'gc' && session) {
    session.post('HeapProfiler.stopSampling', (err, r) => {
      if (!err) fs.writeFileSync(`${out}.heapprofile`, JSON.stringify(r.profile));
      session.disconnect();
      session = undefined;
      finish();
    });
  } else finish();
});
