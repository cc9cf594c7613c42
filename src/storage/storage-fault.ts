import { RegistryError } from '../domain/errors.js';

/**
 * The errnos that mean "the store can't take this write" rather than a bug or a missing file: the
 * disk or quota is full, the volume is read-only or failing, or its permissions changed under us.
 * Classified once here; everything above sees `STORAGE_UNAVAILABLE` (503).
 */
export const STORAGE_FAULT_ERRNOS = ['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EACCES'] as const;
export type StorageFaultErrno = (typeof STORAGE_FAULT_ERRNOS)[number];

/** The errno of a storage fault (`ENOSPC`, …), or undefined for any other error. */
export function storageFaultErrno(err: unknown): StorageFaultErrno | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (STORAGE_FAULT_ERRNOS as readonly string[]).includes(code ?? '') ? (code as StorageFaultErrno) : undefined;
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
