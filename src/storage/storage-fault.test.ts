import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../domain/errors.js';
import { isStorageFault, storageFaultErrno, STORAGE_FAULT_ERRNOS, toStorageError } from './storage-fault.js';
import { StoreHealth } from './store-health.js';
import { storageErrnoError } from './testing/storage-faults.js';

describe('storage faults', () => {
  it('ENOSPC, EDQUOT, EROFS, EIO and EACCES are storage faults; ENOENT and plain errors are not', () => {
    for (const errno of STORAGE_FAULT_ERRNOS) {
      const err = storageErrnoError(errno, 'write');
      assert.equal(storageFaultErrno(err), errno);
      const mapped = toStorageError(err) as RegistryError;
      assert.equal(mapped.code, 'STORAGE_UNAVAILABLE');
      assert.deepEqual(mapped.detail, { errno }, 'the errno for the client; the path only in the cause (the log)');
      assert.equal(mapped.cause, err);
      assert.ok(isStorageFault(mapped));
    }
    for (const other of [Object.assign(new Error('x'), { code: 'ENOENT' }), new Error('EIO in the message only'), undefined]) {
      assert.equal(storageFaultErrno(other), undefined);
      assert.equal(toStorageError(other), other);
    }
  });

  it('StoreHealth: a fault degrades it once (one report, with errno and path), a probe that writes clears it', async () => {
    const changes: boolean[] = [];
    const reports: unknown[] = [];
    let full = true;
    let now = 0;
    const health = new StoreHealth({
      probe: async () => {
        if (full) throw storageErrnoError('ENOSPC', 'open', '/s/tmp/.ready');
      },
      onChange: (w) => changes.push(w),
      onStorageFull: (f) => reports.push(f),
      recheckMs: 1_000,
      clock: () => now,
    });
    assert.equal(health.fault(new Error('not storage')), false);
    assert.equal(health.fault(storageErrnoError('EIO', 'write', '/s/tmp/blob-1')), true);
    assert.equal(health.fault(new RegistryError('STORAGE_UNAVAILABLE', undefined, { cause: storageErrnoError('EIO', 'write') })), true);
    assert.deepEqual(reports, [{ errno: 'EIO', path: '/s/tmp/blob-1' }]);
    assert.equal(await health.writableNow(), false, 'within recheckMs: no probe');
    now = 2_000;
    assert.equal(await health.writableNow(), false, 'probed, still full');
    full = false;
    assert.equal(await health.writableNow(), false, 'the failed probe is reused for recheckMs');
    now = 4_000;
    assert.equal(await health.writableNow(), true);
    assert.deepEqual(changes, [false, true]);
  });
});
