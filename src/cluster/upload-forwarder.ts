import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Agent, request } from 'undici';
import { RegistryError } from '../domain/errors.js';
import type { Logger } from '../lib/logger.js';
import { PEER_SECRET_HEADER, PEER_UPLOADS_PREFIX } from './peer-server.js';

/** What happened to a request for an upload session this replica doesn't hold. */
export type UploadForwardOutcome = 'forwarded' | 'owner_gone' | 'unknown' | 'refused';

/** Where the sessions' owners are written down (cluster/redis-coordinator.ts). */
export interface UploadOwners {
  uploadOwner(id: string): Promise<{ id: string; url: string; record: string } | undefined>;
  forgetUpload(id: string, record: string): Promise<void>;
}

export interface UploadForwarderOptions {
  readonly owners: UploadOwners;
  /** This replica's id (the instance id): a record naming it for a session it doesn't hold is stale. */
  readonly selfId: string;
  /** Sent to the owner's peer endpoint (X-Hubcache-Peer-Secret) when set: the owner trusts only that. */
  readonly peerSecret?: string;
  readonly logger: Logger;
  readonly metrics: { uploadForwarded(outcome: UploadForwardOutcome): void };
  /** Connecting to the owner, at most (a dead owner's address may not answer at all). Default 2 s. */
  readonly connectTimeoutMs?: number;
  /**
   * The owner's answer is waited for at most this long once the request's body has been passed on
   * (at once without a body): an owner that accepts and never answers (hung) releases the client
   * then, as one that can't be reached. Default 60 s (server.headersTimeout in serve).
   */
  readonly answerTimeoutMs?: number;
  /**
   * The same for the final PUT, whose answer comes once the owner has published the blob (on S3 a
   * server-side copy, as long as the blob is big). Default 30 min (cache.fillTimeout in serve).
   */
  readonly publishTimeoutMs?: number;
  /** Runs `fn` after `ms` unless cancelled (tests fire it by hand). Default: an unref'd setTimeout. */
  readonly schedule?: (ms: number, fn: () => void) => () => void;
}

const timerSchedule = (ms: number, fn: () => void) => {
  const timer = setTimeout(fn, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

/** The owner accepted the request and did not answer within the forwarder's answer timeout. */
class OwnerSilentError extends Error {}

// Request headers the owner needs to serve the request as the client sent it: what the body is
// and where it goes. (Hop-by-hop headers are the connection's; Authorization was checked here.)
const REQUEST_HEADERS = ['content-type', 'content-length', 'content-range', 'user-agent'] as const;
// Response headers that are the connection's, or already set here.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'date', 'x-request-id']);

/**
 * A request for an upload session another replica holds (issue #15), passed through to that
 * replica: the session's record in Redis names the owner's follow endpoint (`cluster.advertiseUrl`),
 * the request goes to `<owner>/internal/uploads/<the client's path and query>` with the body
 * streamed as it arrives (never buffered), and the owner's answer — status, `Location`, `Range`,
 * `Docker-Upload-UUID`, `Docker-Content-Digest`, OCI error bodies — comes back unchanged. The
 * client was authenticated and authorized here; the owner trusts the peer secret, not the client.
 *
 * No record (finished, cancelled, expired, never): `BLOB_UPLOAD_UNKNOWN`. An owner that can't be
 * reached (it died, or restarted and lost its sessions): the record is removed and the answer is
 * `BLOB_UPLOAD_UNKNOWN` at once, so the client starts the upload over (docker, skopeo, containerd
 * do); the dead owner's bytes were never visible (only a verified final PUT publishes a blob).
 * An owner that accepts the request and doesn't answer within `answerTimeoutMs` of its body's end
 * (`publishTimeoutMs` for the final PUT) is treated the same way.
 */
export class UploadForwarder {
  readonly #o: UploadForwarderOptions;
  readonly #agent: Agent;

  constructor(o: UploadForwarderOptions) {
    this.#o = o;
    // No headers timeout: the owner answers a PATCH once the whole chunk arrived, however long the
    // client takes to send it (the client side has its own timeouts, and its leaving aborts this).
    this.#agent = new Agent({ connectTimeout: o.connectTimeoutMs ?? 2_000, headersTimeout: 0, bodyTimeout: 60_000 });
  }

  /** Passes `req` (path `path`, as the client wrote it) to the owner of `session` and its answer to `res`. */
  async forward(session: string, path: string, req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const owner = await this.#o.owners.uploadOwner(session);
    if (!owner || owner.id === this.#o.selfId) {
      // A record naming this replica for a session it doesn't hold is left over from before.
      if (owner) await this.#o.owners.forgetUpload(session, owner.record);
      this.#o.metrics.uploadForwarded('unknown');
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: session.slice(0, 100) });
    }
    const headers: Record<string, string> = {};
    for (const name of REQUEST_HEADERS) {
      const v = req.headers[name];
      if (typeof v === 'string') headers[name] = v;
    }
    const requestId = res.getHeader('x-request-id');
    if (typeof requestId === 'string') headers['x-request-id'] = requestId;
    if (this.#o.peerSecret !== undefined) headers[PEER_SECRET_HEADER] = this.#o.peerSecret;
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    let body: PassThrough | undefined;
    let clientLeft = false;
    if (hasBody) {
      // Piped, not handed over: when the owner answers before reading the whole body (a refused
      // chunk), undici destroys what it was given — the client's request must stay to be answered.
      body = new PassThrough({ highWaterMark: 1024 * 1024 });
      req.pipe(body);
      req.once('close', () => {
        if (req.complete) return;
        clientLeft = true;
        body!.destroy(new Error('the client went away mid-body'));
      });
    } else {
      delete headers['content-length'];
    }
    // The answer timeout runs from the end of the body passed on: a client may take as long as it
    // likes to send a chunk (its own timeouts govern that), the owner answers once it has it all.
    const silent = new AbortController();
    const timeoutMs = req.method === 'PUT' ? (this.#o.publishTimeoutMs ?? 30 * 60_000) : (this.#o.answerTimeoutMs ?? 60_000);
    let cancelTimer: (() => void) | undefined;
    const startTimer = () => {
      cancelTimer ??= (this.#o.schedule ?? timerSchedule)(timeoutMs, () => silent.abort(new OwnerSilentError(`no answer ${timeoutMs} ms after the request was passed on`)));
    };
    if (body) body.once('end', startTimer);
    else startTimer();
    let answer;
    try {
      answer = await request(`${owner.url}${PEER_UPLOADS_PREFIX}${path}`, {
        dispatcher: this.#agent,
        method: req.method as 'PATCH',
        headers,
        ...(body ? { body } : {}),
        signal: AbortSignal.any([signal, silent.signal]),
      });
    } catch (err) {
      // The client left mid-body: the owner keeps what arrived (the client may ask and go on).
      if (signal.aborted) throw signal.reason;
      if (silent.signal.aborted) {
        // Hung (or far too slow): as good as gone for this client, who starts the upload over.
        await this.#o.owners.forgetUpload(session, owner.record);
        this.#o.metrics.uploadForwarded('owner_gone');
        this.#o.logger.warn('upload session lost: the replica holding it does not answer', { uuid: session, owner: owner.id, ownerUrl: owner.url, error: (silent.signal.reason as Error).message });
        throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: session.slice(0, 100) }, { message: 'the replica holding this upload does not answer: start the upload again', cause: silent.signal.reason });
      }
      if (clientLeft) throw new RegistryError('BLOB_UPLOAD_INVALID', { uuid: session.slice(0, 100) }, { message: 'the client went away mid-body', cause: err });
      await this.#o.owners.forgetUpload(session, owner.record);
      this.#o.metrics.uploadForwarded('owner_gone');
      this.#o.logger.warn('upload session lost: the replica holding it does not answer', { uuid: session, owner: owner.id, ownerUrl: owner.url, error: (err as Error).message });
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: session.slice(0, 100) }, { message: 'the replica holding this upload is gone: start the upload again', cause: err });
    } finally {
      cancelTimer?.();
      body?.off('end', startTimer);
      if (body) req.unpipe(body);
    }
    if (answer.statusCode === 403 && !String(answer.headers['content-type'] ?? '').includes('json')) {
      // The owner's peer endpoint refused this replica (not the client): the peer secrets differ.
      answer.body.on('error', () => {});
      answer.body.destroy();
      this.#o.metrics.uploadForwarded('refused');
      this.#o.logger.error('a replica refused a forwarded upload request: cluster.peerSecretFile differs between replicas', { uuid: session, owner: owner.id, ownerUrl: owner.url });
      throw new RegistryError('UNAVAILABLE', { uuid: session.slice(0, 100) }, { message: 'the replica holding this upload refused this replica' });
    }
    this.#o.metrics.uploadForwarded('forwarded');
    res.statusCode = answer.statusCode;
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && !HOP_BY_HOP.has(name)) res.setHeader(name, value);
    }
    await pipeline(answer.body, res);
  }

  async close(): Promise<void> {
    await this.#agent.close().catch(() => {});
  }
}
