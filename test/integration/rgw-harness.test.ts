import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, ListBucketsCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { startRgw, type Rgw } from '../support/rgw.js';

describe('the RGW test harness (a real Ceph RGW, never a fake S3)', () => {
  let rgw: Rgw;
  before(async () => {
    rgw = await startRgw();
  });
  after(async () => {
    await rgw?.stop();
  });

  const clientWith = (accessKeyId: string, secretAccessKey: string) => new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 });

  it('stores and returns bytes with the user it created', async () => {
    const bucket = await rgw.createBucket();
    await rgw.client.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: 'hello' }));
    const got = await rgw.client.send(new GetObjectCommand({ Bucket: bucket, Key: 'k' }));
    assert.equal(await got.Body!.transformToString(), 'hello');
  });

  it('refuses a wrong secret (403 SignatureDoesNotMatch) and an unknown key (403 InvalidAccessKeyId)', async () => {
    for (const [client, code] of [
      [clientWith(rgw.accessKeyId, `${rgw.secretAccessKey}x`), 'SignatureDoesNotMatch'],
      [clientWith('NOSUCHKEY0000', rgw.secretAccessKey), 'InvalidAccessKeyId'],
    ] as const) {
      try {
        await assert.rejects(client.send(new ListBucketsCommand({})), (err: unknown) => {
          assert.ok(err instanceof S3ServiceException, String(err));
          assert.equal(err.name, code);
          assert.equal(err.$metadata.httpStatusCode, 403);
          return true;
        });
      } finally {
        client.destroy();
      }
    }
  });

  it('stop() kills the daemons and removes the temp dir (a second stop is harmless)', async () => {
    const other = await startRgw();
    assert.ok(existsSync(other.dir));
    await other.stop();
    await other.stop();
    assert.equal(existsSync(other.dir), false);
  });
});
