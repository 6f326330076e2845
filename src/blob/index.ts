/**
 * Blob storage: media never rides in Kafka, records carry {@link BlobRef}s. `createBlobStore`
 * picks the filesystem or the S3 store from the configuration.
 */
import type { Config } from '../core/config.js';
import { FsBlobStore } from './fs-store.js';
import { S3BlobStore } from './s3-store.js';
import type { BlobStore } from './store.js';

export { FsBlobStore } from './fs-store.js';
export { S3BlobStore, type S3BlobStoreOptions } from './s3-store.js';
export {
  taskKey,
  validateKey,
  validatePrefix,
  type BlobEntry,
  type BlobRef,
  type BlobStat,
  type BlobStore,
  type ByteRange,
  type OpenedBlob,
  type PutOptions,
  type ReadOptions,
} from './store.js';

/** The blob store the configuration names: `fs` under `dataDir`, or `s3` with the `s3*` settings. */
export function createBlobStore(config: Config): BlobStore {
  if (config.blobStore === 'fs') return new FsBlobStore(config.dataDir);
  return new S3BlobStore({
    endpoint: config.s3Endpoint,
    bucket: config.s3Bucket,
    region: config.s3Region,
    accessKeyId: config.s3AccessKeyId,
    secretAccessKey: config.s3SecretAccessKey,
    forcePathStyle: config.s3ForcePathStyle,
    timeoutMs: config.blobTimeoutMs,
  });
}
