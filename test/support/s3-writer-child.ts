/**
 * A process writing one blob into an S3 store, to be killed mid-upload (s3 crash test). Prints
 * `upload <id>` once its multipart upload has taken a part, then keeps the upload open forever.
 * argv: endpoint accessKeyId secretAccessKey bucket prefix [digest] — with a digest, a fill's writer
 * (its upload on the blob's own key), else a push's (under uploads/).
 */
import { randomBytes } from 'node:crypto';
import type { Digest } from '../../src/domain/digest.js';
import { silentLogger } from '../../src/lib/logger.js';
import { S3Storage } from '../../src/storage/s3/s3-storage.js';

const [endpoint, accessKeyId, secretAccessKey, bucket, prefix, digest] = process.argv.slice(2) as [string, string, string, string, string, Digest | undefined];
const storage = new S3Storage({ endpoint, accessKeyId, secretAccessKey, bucket, prefix, region: 'us-east-1', forcePathStyle: true, partSize: 5 * 1024 * 1024, partsInFlight: 1, logger: silentLogger() });
const raw = storage.bucketBlobs.createRaw(digest);
await raw.write([randomBytes(5 * 1024 * 1024)]);
await raw.write([randomBytes(1024)]); // waits for the first part's slot: it is uploading or done
process.stdout.write(`upload ${await raw.uploadId()}\n`);
setInterval(() => {}, 1 << 30);
