/**
 * The one error-code table (OCI distribution spec §"Error Codes", plus the codes Docker Hub and
 * distribution use on the wire). Domain code throws `RegistryError(code)`; only the HTTP error
 * middleware reads `status`. docs/errors.md is kept in sync with this table by a test.
 * Not every code is produced today: see RESERVED_ERROR_CODES.
 */
export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 404, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  // Not in the spec's table but used by distribution for these situations.
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  LOOP_DETECTED: { status: 508, message: 'request loop detected: this hubcache instance is its own upstream' },
  UPSTREAM_UNKNOWN: { status: 404, message: 'registry not configured on this mirror' },
  UNAVAILABLE: { status: 503, message: 'upstream registry unavailable and no cached copy' },
  STORAGE_UNAVAILABLE: { status: 503, message: 'the cache store failed (full, read-only or failing) and the content could not be served from upstream instead' },
  UPSTREAM_ERROR: { status: 502, message: 'upstream registry returned an invalid response' },
  NOT_FOUND: { status: 404, message: 'no such registry API endpoint' },
  MAINTENANCE_RUNNING: { status: 409, message: 'another replica is running an eviction or garbage collection pass' },
  MAINTENANCE_UNAVAILABLE: { status: 503, message: "the cluster's shared state (Redis) is unreachable: no pass that deletes runs until it answers" },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Codes of the table that nothing produces yet. None today: push (issue #14) returns the upload
 * and manifest-reference codes, client authentication returns UNAUTHORIZED. docs/errors.md lists
 * reserved codes apart; a test checks that it does and that no source file outside this one names them.
 */
export const RESERVED_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([]);

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly detail: unknown;
  /** Extra response headers (e.g. the upstream's rate-limit headers on a 429). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, detail?: unknown, options?: { headers?: Record<string, string>; cause?: unknown; message?: string }) {
    super(options?.message ?? ERROR_CODES[code].message, { cause: options?.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.detail = detail;
    this.headers = options?.headers ?? {};
  }
}

/**
 * A RegistryError that answers a client (a refusal: 401 with its challenge, 403, 429), not a fault
 * of ours: made without a stack trace, which nobody reads for these and which costs ~10–20 µs to
 * capture (request handlers run deep in express's stack) on every 401 of the token protocol.
 */
export function refusal(code: ErrorCode, detail?: unknown, options?: { headers?: Record<string, string>; message?: string }): RegistryError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new RegistryError(code, detail, options);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export function isRegistryError(err: unknown): err is RegistryError {
  return err instanceof RegistryError;
}
