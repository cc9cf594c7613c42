/**
 * A load balancer without affinity, for the several-replicas tests: each REQUEST (not each
 * connection) goes to the next backend in turn, so the requests of one push — POST, PATCHes, PUT —
 * land on different replicas even over one kept-alive client connection. Bodies are streamed both
 * ways; the `Host` header is passed on unchanged (the replicas' `Location`s and token realms name
 * the proxy, as behind a real load balancer). Every request is recorded with the backend it went to.
 */
import { once } from 'node:events';
import { Agent, createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';

export interface Routed {
  readonly method: string;
  readonly path: string;
  /** Index of the backend it went to. */
  readonly backend: number;
  /** The backend's status; undefined when it didn't answer. */
  status?: number;
}

export interface RoundRobinProxy {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** 127.0.0.1:PORT */
  readonly host: string;
  /** Every request so far, in arrival order. */
  readonly routed: readonly Routed[];
  close(): Promise<void>;
}

export async function startRoundRobinProxy(backends: readonly string[]): Promise<RoundRobinProxy> {
  const agent = new Agent({ keepAlive: true });
  const routed: Routed[] = [];
  let next = 0;
  const server: Server = createServer((req, res) => {
    const backend = next++ % backends.length;
    const entry: Routed = { method: req.method ?? 'GET', path: req.url ?? '/', backend };
    routed.push(entry);
    const target = new URL(req.url ?? '/', backends[backend]);
    const out = request(target, { method: req.method, headers: req.headers, agent }, (answer) => {
      entry.status = answer.statusCode;
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      pipeline(answer, res).catch(() => res.destroy());
    });
    out.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-length': 0, connection: 'close' }).end();
      else res.destroy();
    });
    pipeline(req, out).catch(() => out.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    routed,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      agent.destroy();
    },
  };
}
