import type { IncomingMessage, ServerResponse } from 'node:http';
import { finished } from 'node:stream';
import type { Request, Response } from 'express';
import { parseDigest } from '../../domain/digest.js';
import { RegistryError } from '../../domain/errors.js';
import { MediaTypes } from '../../domain/media-types.js';
import type { Reference, RepoKey } from '../../domain/reference.js';
import type { HostedRegistry, UploadStatus } from '../../hosted/hosted-registry.js';

/**
 * The push side of the distribution spec for hosted repositories: blob uploads, manifest PUTs,
 * deletes and the referrers API. Statuses and headers as the spec says (docs/protocol.md, "Push");
 * whether the request may do it was decided before (the route table's action, http/access.ts).
 * `name` is the repository as the client wrote it: the `Location`s repeat it.
 */
export interface PushContext {
  readonly hosted: HostedRegistry;
  readonly key: RepoKey;
  readonly name: string;
  readonly maxManifestBytes: number;
  /**
   * Several replicas (issue #15): requests for an upload session another replica holds are passed
   * through to it (cluster/upload-forwarder.ts). Absent (one replica, or the owner serving a request
   * passed on to it): a session not held here is `BLOB_UPLOAD_UNKNOWN`.
   */
  readonly uploadsElsewhere?: UploadForwarding;
}

/** Passes a request for an upload session held by another replica on to it, and its answer back. */
export interface UploadForwarding {
  /** `BLOB_UPLOAD_UNKNOWN` when no live replica holds `session`. `path` is the request's, as the client sent it. */
  forward(session: string, path: string, req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void>;
}

/** `POST|PATCH|PUT|GET|DELETE /v2/<name>/blobs/uploads/[<session>]`. */
export async function serveUpload(ctx: PushContext, session: string | undefined, query: URLSearchParams, req: Request, res: Response): Promise<void> {
  const { hosted, key } = ctx;
  if (session === undefined) {
    if (req.method !== 'POST') throw new RegistryError('UNSUPPORTED', { method: req.method }, { message: `${req.method} needs an upload session` });
    const mount = query.get('mount');
    if (mount !== null) {
      const digest = parseDigest(mount);
      req.resume();
      if (await hosted.mount(key, digest)) return blobCreated(ctx, digest, res);
      // Not here: a normal upload session, as the spec says.
      return uploadAccepted(ctx, await hosted.startUpload(key), res);
    }
    const whole = query.get('digest');
    if (whole !== null) {
      const digest = parseDigest(whole);
      await withBody(req, (body) => hosted.uploadWhole(key, digest, body, contentLength(req)));
      return blobCreated(ctx, digest, res);
    }
    req.resume();
    return uploadAccepted(ctx, await hosted.startUpload(key), res);
  }
  if (ctx.uploadsElsewhere && !hosted.holdsUpload(session)) {
    // Authorized above, by this replica; the owner serves it as is (docs/architecture.md, "Uploads across replicas").
    try {
      return await ctx.uploadsElsewhere.forward(session, req.originalUrl, req, res, req.ctx.signal);
    } catch (err) {
      if (req.ctx.signal.aborted) throw req.ctx.signal.reason;
      throw err;
    }
  }
  switch (req.method) {
    case 'GET': {
      const status = hosted.uploadStatus(key, session);
      res.status(204);
      uploadHeaders(ctx, status, res);
      res.end();
      return;
    }
    case 'PATCH': {
      const current = hosted.uploadStatus(key, session);
      const start = chunkStart(req, current);
      if (start !== undefined && start !== current.offset) throw outOfOrder(ctx, current);
      const status = await withBody(req, (body) => hosted.appendUpload(key, session, body, start));
      return uploadAccepted(ctx, status, res);
    }
    case 'PUT': {
      const status = hosted.uploadStatus(key, session);
      const raw = query.get('digest');
      if (raw === null) throw new RegistryError('DIGEST_INVALID', undefined, { message: 'the final PUT of an upload needs ?digest=' });
      const digest = parseDigest(raw);
      const start = chunkStart(req, status);
      if (start !== undefined && start !== status.offset) throw outOfOrder(ctx, status);
      await withBody(req, (body) => hosted.finishUpload(key, session, digest, body));
      return blobCreated(ctx, digest, res);
    }
    case 'DELETE':
      await hosted.cancelUpload(key, session);
      res.status(204).setHeader('Content-Length', 0);
      res.end();
      return;
    default:
      throw new RegistryError('UNSUPPORTED', { method: req.method }, { message: `${req.method} is not supported on an upload session` });
  }
}

/** `PUT /v2/<name>/manifests/<reference>`: 201 with `Location`, `Docker-Content-Digest` and `OCI-Subject` when it has a subject. */
export async function putManifest(ctx: PushContext, ref: Reference, req: Request, res: Response): Promise<void> {
  const body = await readLimited(req, ctx.maxManifestBytes);
  const { descriptor, subject } = await ctx.hosted.putManifest(ctx.key, ref, body, req.get('content-type'));
  res.status(201);
  res.setHeader('Location', `/v2/${ctx.name}/manifests/${descriptor.digest}`);
  res.setHeader('Docker-Content-Digest', descriptor.digest);
  if (subject) res.setHeader('OCI-Subject', subject);
  res.setHeader('Content-Length', 0);
  res.end();
}

/** `DELETE /v2/<name>/manifests/<reference>` and `/blobs/<digest>`: 202 (hosted.allowDelete). */
export async function deleteContent(ctx: PushContext, what: { manifest: Reference } | { blob: ReturnType<typeof parseDigest> }, res: Response): Promise<void> {
  if ('manifest' in what) await ctx.hosted.deleteManifest(ctx.key, what.manifest);
  else await ctx.hosted.deleteBlob(ctx.key, what.blob);
  res.status(202).setHeader('Content-Length', 0);
  res.end();
}

/** `GET /v2/<name>/referrers/<digest>[?artifactType=]`: an OCI image index, `OCI-Filters-Applied` when filtered. */
export async function serveReferrers(ctx: PushContext, digest: ReturnType<typeof parseDigest>, query: URLSearchParams, res: Response): Promise<void> {
  const artifactType = query.get('artifactType') ?? undefined;
  const body = await ctx.hosted.referrers(ctx.key, digest, artifactType);
  res.status(200);
  res.setHeader('Content-Type', MediaTypes.ociIndex);
  if (artifactType !== undefined) res.setHeader('OCI-Filters-Applied', 'artifactType');
  res.setHeader('Content-Length', body.length);
  res.end(body);
}

function uploadHeaders(ctx: PushContext, status: UploadStatus, res: Response): void {
  res.setHeader('Location', `/v2/${ctx.name}/blobs/uploads/${status.id}`);
  res.setHeader('Docker-Upload-UUID', status.id);
  res.setHeader('Range', rangeOf(status.offset));
}

function uploadAccepted(ctx: PushContext, status: UploadStatus, res: Response): void {
  res.status(202);
  uploadHeaders(ctx, status, res);
  res.setHeader('Content-Length', 0);
  res.end();
}

function blobCreated(ctx: PushContext, digest: string, res: Response): void {
  res.status(201);
  res.setHeader('Location', `/v2/${ctx.name}/blobs/${digest}`);
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('Content-Length', 0);
  res.end();
}

/** See storage/upload-sessions.ts `uploadRange`: `0-<last byte>`, `0-0` when empty. */
function rangeOf(offset: number): string {
  return `0-${Math.max(0, offset - 1)}`;
}

function outOfOrder(ctx: PushContext, status: UploadStatus): RegistryError {
  return new RegistryError('RANGE_INVALID', { offset: status.offset }, {
    message: 'chunk out of order: it must start at the upload’s current offset',
    headers: { Range: rangeOf(status.offset), Location: `/v2/${ctx.name}/blobs/uploads/${status.id}`, 'Docker-Upload-UUID': status.id },
  });
}

/**
 * Where a chunk says it starts (`Content-Range: <start>-<end>`, inclusive; `bytes ` prefix
 * tolerated), or `undefined` without the header. A malformed header, or one whose length disagrees
 * with `Content-Length`, is `RANGE_INVALID` (416) with the current `Range`.
 */
function chunkStart(req: Request, status: UploadStatus): number | undefined {
  const header = req.get('content-range');
  if (header === undefined) return undefined;
  const m = /^\s*(?:bytes\s+)?(\d{1,15})-(\d{1,15})(?:\/(?:\d+|\*))?\s*$/.exec(header);
  const length = contentLength(req);
  if (!m || Number(m[2]) < Number(m[1]) || (length !== undefined && length !== Number(m[2]) - Number(m[1]) + 1)) {
    throw new RegistryError('RANGE_INVALID', { contentRange: header.slice(0, 100) }, { message: 'invalid Content-Range for an upload chunk', headers: { Range: rangeOf(status.offset), 'Docker-Upload-UUID': status.id } });
  }
  return Number(m[1]);
}

function contentLength(req: Request): number | undefined {
  const v = req.get('content-length');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/**
 * Runs `fn` with the request body (`uploadBody`). When the client goes away mid-body the error
 * is the request's signal (nobody to answer, see the error handler), not a failure of ours.
 */
async function withBody<T>(req: Request, fn: (body: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
  try {
    return await fn(uploadBody(req));
  } catch (err) {
    if (req.ctx.signal.aborted) throw req.ctx.signal.reason;
    throw err;
  }
}

/**
 * The body of an upload, read in flowing mode with UPLOAD_READ_AHEAD bytes of room. Read the
 * usual way (`for await` on the request), a body stalls the socket at every chunk: the request's
 * buffer holds 16 KiB, a socket read brings 64 KiB, so each read stops the socket and the next one
 * restarts it — a 1 GiB push profiled mostly idle, waiting for bytes. (A `PassThrough` with a
 * bigger buffer fixes that but concatenates what it buffers: a copy of every byte.) Here the
 * chunks are taken as they arrive, without a copy, and the request is paused only while this much
 * waits for the store — the blob is still streamed, never held. The request's error (the client
 * left mid-body) is the iteration's; a consumer that stops early destroys the request, as a
 * `for await` on it does.
 */
async function* uploadBody(req: Request): AsyncGenerator<Uint8Array> {
  const queue: Buffer[] = [];
  let queued = 0;
  let ended: { err?: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (chunk: Buffer) => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= UPLOAD_READ_AHEAD) req.pause();
    notify();
  };
  req.on('data', onData);
  const stopWatching = finished(req, (err) => {
    ended = err ? { err } : {};
    notify();
  });
  try {
    for (;;) {
      const chunk = queue.shift();
      if (chunk) {
        queued -= chunk.length;
        if (req.isPaused() && queued < UPLOAD_READ_AHEAD / 2) req.resume();
        yield chunk;
        continue;
      }
      if (ended) {
        if (ended.err) throw ended.err;
        return;
      }
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    req.off('data', onData);
    stopWatching();
    if (!ended) req.destroy();
  }
}

/** Bytes of an upload's body taken ahead of the store (per request: bounded memory). */
const UPLOAD_READ_AHEAD = 1024 * 1024;

/** The whole body, refused as `MANIFEST_INVALID` beyond `max` bytes (without reading further). */
async function readLimited(req: Request, max: number): Promise<Buffer> {
  const declared = contentLength(req);
  if (declared !== undefined && declared > max) throw tooBig(max);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) throw tooBig(max);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function tooBig(max: number): RegistryError {
  return new RegistryError('MANIFEST_INVALID', { maxBytes: max }, { message: `the manifest is larger than ${max} bytes (upstreamClient.maxManifestSize)` });
}
