import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { isRegistryError, type ErrorCode } from '../../domain/errors.js';

/** Consumes a stream into one Buffer. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Asserts that `p` rejects with a `RegistryError` of this code. */
export async function rejectsWithCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isRegistryError(err), `expected RegistryError(${code}), got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}
