import { RegistryError } from '../domain/errors.js';

/**
 * The errnos that mean "the store can't take this write" rather than a bug or a missing file: the
 * disk or quota is full, the volume is read-only or failing, or its permissions changed under us.
 * Classified once here; everything above sees `STORAGE_UNAVAILABLE` (503).
 */
export const STORAGE_FAULT_ERRNOS = ['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EACCES'] as const;
export type StorageFaultErrno = (typeof STORAGE_FAULT_ERRNOS)[number];

/**
 * The errno of a storage fault (`ENOSPC`, …), or undefined for any other error. Looks through
 * `cause` chains: the cache wraps store and spool failures (`StorageWriteError`) with the errno as cause.
 */
export function storageFaultErrno(err: unknown): StorageFaultErrno | undefined {
  return storageFaultCause(err)?.code as StorageFaultErrno | undefined;
}

/** The errno error itself (with its `path`), found in `err` or its `cause` chain. */
export function storageFaultCause(err: unknown): NodeJS.ErrnoException | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof RegistryError) return undefined;
    const code = (e as NodeJS.ErrnoException).code;
    if ((STORAGE_FAULT_ERRNOS as readonly string[]).includes(code ?? '')) return e as NodeJS.ErrnoException;
  }
  return undefined;
}

/** True for a `STORAGE_UNAVAILABLE` RegistryError or a raw storage-fault errno. */
export function isStorageFault(err: unknown): boolean {
  return (err instanceof RegistryError && err.code === 'STORAGE_UNAVAILABLE') || storageFaultErrno(err) !== undefined;
}

/**
 * `err` as the `STORAGE_UNAVAILABLE` RegistryError when it is a storage fault (the errno goes to the
 * client's `detail`; the path stays in the cause, for the log), else `err` unchanged.
 */
export function toStorageError(err: unknown): unknown {
  if (err instanceof RegistryError) return err;
  const errno = storageFaultErrno(err);
  if (errno === undefined) return err;
  return new RegistryError('STORAGE_UNAVAILABLE', { errno }, { cause: err });
}
