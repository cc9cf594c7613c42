import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { Agent as HttpAgent } from 'node:http';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { rootCertificates } from 'node:tls';
import { ConfigError } from '../../config/load.js';

/** What `S3Storage` needs to reach the bucket (the `storage` keys of `driver: s3`). */
export interface S3ConnectionOptions {
  readonly bucket: string;
  readonly endpoint?: string | undefined;
  readonly region: string;
  readonly forcePathStyle: boolean;
  readonly accessKeyId?: string | undefined;
  readonly secretAccessKey?: string | undefined;
  readonly accessKeyIdFile?: string | undefined;
  readonly secretAccessKeyFile?: string | undefined;
  readonly caFile?: string | undefined;
  /** Attempts per S3 call, the first included (the SDK's standard retry strategy, with backoff). Default 3. */
  readonly maxAttempts?: number;
  /** Sockets per replica to the endpoint. Default 64. */
  readonly maxSockets?: number;
}

function readSecretFile(key: string, path: string): string {
  try {
    const v = readFileSync(path, 'utf8').trim();
    if (v.length === 0) throw new Error('the file is empty');
    return v;
  } catch (err) {
    throw new ConfigError([`storage.${key}: can't read ${path}: ${(err as Error).message}`]);
  }
}

/**
 * The S3 client for the store: the endpoint and path style (RGW, MinIO), the credentials from the
 * config or its files (else the SDK's default chain: `AWS_*` env, profiles, web identity…), a custom
 * CA for the endpoint's TLS, keep-alive sockets, and bounded retries (the SDK's standard strategy).
 * Throws `ConfigError` for a file it can't read.
 */
export function createS3Client(o: S3ConnectionOptions): S3Client {
  const accessKeyId = o.accessKeyId ?? (o.accessKeyIdFile !== undefined ? readSecretFile('accessKeyIdFile', o.accessKeyIdFile) : undefined);
  const secretAccessKey = o.secretAccessKey ?? (o.secretAccessKeyFile !== undefined ? readSecretFile('secretAccessKeyFile', o.secretAccessKeyFile) : undefined);
  let ca: Buffer | undefined;
  if (o.caFile !== undefined) {
    try {
      ca = readFileSync(o.caFile);
    } catch (err) {
      throw new ConfigError([`storage.caFile: can't read ${o.caFile}: ${(err as Error).message}`]);
    }
  }
  const maxSockets = o.maxSockets ?? 64;
  const config: S3ClientConfig = {
    region: o.region,
    forcePathStyle: o.forcePathStyle,
    maxAttempts: o.maxAttempts ?? 3,
    // Checksums only when the operation requires them: RGW 16.2 and other S3-compatible stores
    // don't all understand the newer flexible checksum headers. Blobs are verified by sha256 anyway.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // The SDK's Node handler options (it builds its NodeHttpHandler from them).
    requestHandler: {
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets, ...(ca ? { ca: [ca, ...rootCertificates] } : {}) }),
      connectionTimeout: 5_000,
      requestTimeout: 60_000,
    },
    ...(o.endpoint !== undefined ? { endpoint: o.endpoint } : {}),
    ...(accessKeyId !== undefined && secretAccessKey !== undefined ? { credentials: { accessKeyId, secretAccessKey } } : {}),
  };
  return new S3Client(config);
}
