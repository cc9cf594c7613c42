/**
 * The upstream of bench/tag-list.ts, in a process of its own so that generating its huge answer
 * never delays the benchmark's own requests: one repository (`huge/app`) whose tag list is
 * `BENCH_TAGS` tags in one document, in reverse order (hubcache must sort it), ignoring n and last
 * as distribution 2.8 does. Sends its port, then a message per tag-list GET, to its parent.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const TAGS = Number(process.env.BENCH_TAGS ?? 1_500_000);

const server = createServer((req, res) => {
  if (!/^\/v2\/huge\/app\/tags\/list/.test(req.url ?? '')) {
    res.writeHead(req.url === '/v2/' ? 200 : 404, { 'content-type': 'application/json' }).end('{}');
    return;
  }
  process.send?.({ tagListGet: true });
  res.writeHead(200, { 'content-type': 'application/json' });
  res.write('{"name":"huge/app","tags":[');
  let i = 0;
  const pump = () => {
    while (i < TAGS && !res.destroyed) {
      const parts: string[] = [];
      for (let k = 0; k < 10_000 && i < TAGS; k++, i++) parts.push(`${i > 0 ? ',' : ''}"t${String(TAGS - i).padStart(7, '0')}"`);
      if (!res.write(parts.join(''))) return;
    }
    if (!res.destroyed) res.end(']}');
  };
  res.on('drain', pump);
  pump();
});
server.listen(0, '127.0.0.1', () => process.send?.({ port: (server.address() as AddressInfo).port }));
process.on('disconnect', () => process.exit(0));
