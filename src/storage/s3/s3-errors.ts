import { S3ServiceException } from '@aws-sdk/client-s3';
import type { StorageFaultErrno } from '../storage-fault.js';

/**
 * An S3 call that failed in a way that means "the store can't serve this now": the errno-like
 * `code` puts it in the storage fault taxonomy (storage-fault.ts), so everything above storage/
 * treats it as it treats a failing disk — `STORAGE_UNAVAILABLE` (503), pass-through from upstream,
 * the store marked degraded until a probe write succeeds again. The mapping:
 *   - `EACCES`: 401/403 — wrong or revoked credentials, a bucket policy (`AccessDenied`,
 *     `InvalidAccessKeyId`, `SignatureDoesNotMatch`, …);
 *   - `EDQUOT`: `QuotaExceeded` (RGW user/bucket quotas);
 *   - `EIO`: the endpoint unreachable (connection refused or reset, DNS, TLS, timeouts), `5xx`
 *     (`SlowDown`, `ServiceUnavailable`, `InternalError`), `NoSuchBucket`, and any other failure
 *     after the SDK's bounded retries.
 * `s3Code` and `status` keep what S3 said, for the log; `cause` the SDK's error.
 */
export class S3StorageError extends Error {
  readonly code: StorageFaultErrno;
  readonly s3Code: string;
  readonly status: number | undefined;
  /** Node's (negative) errno on Linux, like a node:fs error's. */
  readonly errno: number;
  readonly syscall: string;

  constructor(operation: string, code: StorageFaultErrno, s3Code: string, status: number | undefined, cause: unknown) {
    super(`S3 ${operation} failed: ${s3Code}${status !== undefined ? ` (HTTP ${status})` : ''}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'S3StorageError';
    this.code = code;
    this.s3Code = s3Code;
    this.status = status;
    this.errno = { ENOSPC: -28, EDQUOT: -122, EROFS: -30, EIO: -5, EACCES: -13 }[code];
    this.syscall = operation;
  }
}

/** The HTTP status of an SDK error, when it got a response. */
export function s3Status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** The S3 error code (`NoSuchKey`, `AccessDenied`…) or the network error's code (`ECONNREFUSED`). */
export function s3Code(err: unknown): string {
  if (err instanceof S3ServiceException) return err.name;
  const e = err as { code?: unknown; name?: unknown } | undefined;
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.name === 'string') return e.name;
  return 'Error';
}

const AUTH_CODES = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired', 'AllAccessDisabled', 'CredentialsProviderError']);

/**
 * `err` (from an S3 call) as a storage fault (`S3StorageError`), except what isn't one: an
 * `AbortError` (the caller gave up) and errors the caller handles itself (not found, precondition
 * failed, invalid range), which are returned unchanged.
 */
export function toS3Fault(operation: string, err: unknown): unknown {
  if (err instanceof S3StorageError) return err;
  const name = (err as { name?: unknown } | undefined)?.name;
  if (name === 'AbortError') return err;
  const status = s3Status(err);
  const code = s3Code(err);
  if (status === 404 && code !== 'NoSuchBucket') return err;
  if (status === 412 || status === 416) return err;
  if (status === 401 || status === 403 || AUTH_CODES.has(code)) return new S3StorageError(operation, 'EACCES', code, status, err);
  if (code === 'QuotaExceeded') return new S3StorageError(operation, 'EDQUOT', code, status, err);
  return new S3StorageError(operation, 'EIO', code, status, err);
}

/** True when `err` says the object isn't there (404 NoSuchKey / NotFound). */
export function isNotFound(err: unknown): boolean {
  return s3Status(err) === 404 && s3Code(err) !== 'NoSuchBucket';
}

/** True for `412 Precondition Failed` (a create-only PUT lost to an existing object). */
export function isPreconditionFailed(err: unknown): boolean {
  return s3Status(err) === 412;
}
