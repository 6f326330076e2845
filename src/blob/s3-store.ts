/**
 * The S3 blob store, for AWS S3 or any S3-compatible server (S3Proxy locally, MinIO, Ceph, ...).
 * The bucket is created on the first write when missing; each object carries its sha256 in user
 * metadata (`x-amz-meta-sha256`) so that `stat` can report it without reading the object.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type BucketLocationConstraint,
  type GetObjectCommandOutput,
  type HeadObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { SonicError } from '../core/errors.js';
import { LocalIoError, errnoOf, hashFile, writeFileAtomically, type Digest } from './local-file.js';
import {
  checkSha256,
  copyOntoItself,
  keyAfterPrefix,
  sha256Hasher,
  sha256Hex,
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

/** Connection settings of an {@link S3BlobStore} (the `s3*` settings of the configuration). */
export interface S3BlobStoreOptions {
  /** Endpoint URL; empty for AWS itself. */
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style URLs (`<endpoint>/<bucket>/<key>`), as S3Proxy and MinIO need. */
  forcePathStyle: boolean;
  /**
   * Longest one call may take in all, body included, ms (the SDK's socket timeout only bounds
   * silence: a server sending a byte a minute would hold a stage forever); 300 000 by default.
   * Streams opened with `openRead` (served to clients) have no total deadline.
   */
  timeoutMs?: number;
}

const NOT_FOUND_NAMES = new Set(['NoSuchKey', 'NotFound', 'NoSuchBucket']);

interface SdkError {
  name?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as SdkError | null)?.$metadata?.httpStatusCode;
}

function nameOf(err: unknown): string {
  const e = err as SdkError | null;
  return e?.Code ?? e?.name ?? 'Error';
}

/** A {@link BlobStore} on an S3 bucket; uris are `s3://<bucket>/<key>`. */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  readonly bucket: string;
  /** The endpoint, for messages; `aws` when empty. */
  readonly endpoint: string;
  // private fields: neither JSON.stringify nor util.inspect shows them, so the credentials stay out of logs
  readonly #client: S3Client;
  readonly #region: string;
  readonly #timeoutMs: number;
  #bucketReady: Promise<void> | undefined;

  constructor(opts: S3BlobStoreOptions) {
    this.bucket = opts.bucket;
    this.endpoint = opts.endpoint === '' ? 'aws' : opts.endpoint;
    this.#region = opts.region;
    this.#timeoutMs = opts.timeoutMs ?? 300_000;
    this.#client = new S3Client({
      ...(opts.endpoint === '' ? {} : { endpoint: opts.endpoint }),
      region: opts.region,
      forcePathStyle: opts.forcePathStyle,
      credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
      // S3-compatible servers (S3Proxy among them) refuse the x-amz-checksum-* headers the SDK adds by default
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // socketTimeout is an idle timeout, so large objects may take as long as they keep flowing
      requestHandler: { connectionTimeout: 5_000, socketTimeout: 60_000 },
    });
  }

  async put(key: string, data: Buffer | string, opts: PutOptions = {}): Promise<BlobRef> {
    validateKey(key);
    let digest: Digest;
    if (typeof data === 'string') {
      try {
        // hashed first: the checksum travels as a header, ahead of the body
        digest = await hashFile(data);
      } catch (err) {
        throw sourceFileError(key, data, err);
      }
    } else {
      digest = { sha256: sha256Hex(data), size_bytes: data.length };
    }
    await this.#ensureBucket();
    const body = typeof data === 'string' ? createReadStream(data) : data;
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: digest.size_bytes,
          ...(opts.contentType === undefined ? {} : { ContentType: opts.contentType }),
          Metadata: { sha256: digest.sha256 },
        }),
        this.#deadline(),
      );
    } catch (err) {
      throw this.#error('write', key, err);
    } finally {
      if (body instanceof Readable) body.destroy();
    }
    return { uri: this.#uri(key), key, size_bytes: digest.size_bytes, sha256: digest.sha256, content_type: opts.contentType ?? null };
  }

  async getBuffer(key: string, opts: ReadOptions = {}): Promise<Buffer> {
    const body = await this.#getBody(key);
    let data: Buffer;
    try {
      data = Buffer.from(await body.transformToByteArray());
    } catch (err) {
      throw this.#error('read', key, err);
    }
    checkSha256(key, opts.sha256, sha256Hex(data));
    return data;
  }

  async openRead(key: string, range?: ByteRange): Promise<OpenedBlob> {
    validateKey(key);
    let res: GetObjectCommandOutput;
    try {
      res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }));
    } catch (err) {
      throw this.#error('read', key, err);
    }
    if (!(res.Body instanceof Readable)) {
      throw new SonicError('INPUT_FETCH_FAILED', `S3 read of ${this.#uri(key)} returned no stream`, { details: this.#details(key) });
    }
    // ContentRange: "bytes 0-99/1234"; without a range the length is the size
    const total = /\/(\d+)$/.exec(res.ContentRange ?? '')?.[1];
    const size = total !== undefined ? Number(total) : (res.ContentLength ?? 0);
    const sha256 = res.Metadata?.['sha256'];
    return { stream: res.Body, size, ...(sha256 ? { sha256 } : {}), ...(res.ContentType ? { content_type: res.ContentType } : {}) };
  }

  async download(key: string, toPath: string, opts: ReadOptions = {}): Promise<void> {
    const body = await this.#getBody(key);
    if (!(body instanceof Readable)) {
      throw new SonicError('INPUT_FETCH_FAILED', `S3 read of ${this.#uri(key)} returned no stream`, { details: this.#details(key) });
    }
    try {
      await writeFileAtomically(toPath, body, (d) => checkSha256(key, opts.sha256, d.sha256));
    } catch (err) {
      if (err instanceof SonicError) throw err;
      if (err instanceof LocalIoError && err.side === 'target') {
        throw new SonicError('STORAGE_WRITE_FAILED', `${this.#uri(key)} could not be downloaded to ${toPath}: ${err.errno ?? err.message}`, {
          cause: err.error,
          details: { ...this.#details(key), path: toPath, errno: err.errno },
        });
      }
      throw this.#error('read', key, err instanceof LocalIoError ? err.error : err);
    } finally {
      body.destroy();
    }
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    validateKey(key);
    try {
      const head = await this.#client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), this.#deadline());
      const out: BlobStat = { size_bytes: head.ContentLength ?? 0 };
      const sha256 = head.Metadata?.['sha256'];
      if (sha256 !== undefined) out.sha256 = sha256;
      if (head.ContentType !== undefined) out.content_type = head.ContentType;
      return out;
    } catch (err) {
      const e = this.#error('read', key, err);
      if (e.code === 'INPUT_NOT_FOUND') return undefined;
      throw e;
    }
  }

  /**
   * A server-side CopyObject: the bytes never pass through this process. The copy gets the same
   * metadata `put` writes (`ContentType`, `x-amz-meta-sha256`), taken from a HEAD of the source,
   * and the copy is made only from that very version of it (`x-amz-copy-source-if-match` on its
   * ETag): a source replaced in between fails with 412 rather than pairing one content with
   * another's checksum. A source without a sha256 (written outside the store) is hashed first,
   * streamed. One CopyObject copies up to 5 GiB, far above the media limits.
   */
  async copy(fromKey: string, toKey: string): Promise<BlobRef> {
    validateKey(fromKey);
    validateKey(toKey);
    if (fromKey === toKey) throw copyOntoItself(fromKey);
    let head: HeadObjectCommandOutput;
    try {
      head = await this.#client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: fromKey }), this.#deadline());
    } catch (err) {
      throw this.#error('read', fromKey, err);
    }
    const etag = head.ETag;
    if (etag === undefined) {
      throw new SonicError('INPUT_FETCH_FAILED', `S3 HEAD of ${this.#uri(fromKey)} returned no ETag`, { details: this.#details(fromKey) });
    }
    const size = head.ContentLength ?? 0;
    const sha256 = head.Metadata?.['sha256'] ?? (await this.#hashVersion(fromKey, etag));
    try {
      await this.#client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: toKey,
          // keys are [A-Za-z0-9._-/] (validateKey): nothing to escape
          CopySource: `${this.bucket}/${fromKey}`,
          CopySourceIfMatch: etag,
          MetadataDirective: 'REPLACE',
          ...(head.ContentType === undefined ? {} : { ContentType: head.ContentType }),
          Metadata: { sha256 },
        }),
        this.#deadline(),
      );
    } catch (err) {
      // the source is gone (a delete in between)
      if (NOT_FOUND_NAMES.has(nameOf(err)) || statusOf(err) === 404) throw this.#error('read', fromKey, err);
      if (statusOf(err) === 412) {
        throw new SonicError('INPUT_FETCH_FAILED', `${this.#uri(fromKey)} changed while it was copied to ${this.#uri(toKey)}`, {
          cause: err,
          details: { ...this.#details(toKey), from: fromKey },
        });
      }
      throw this.#error('write', toKey, err);
    }
    return { uri: this.#uri(toKey), key: toKey, size_bytes: size, sha256, content_type: head.ContentType ?? null };
  }

  async delete(key: string): Promise<void> {
    validateKey(key);
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), this.#deadline());
    } catch (err) {
      // no bucket, no object: deleting is already done
      if (NOT_FOUND_NAMES.has(nameOf(err)) || statusOf(err) === 404) return;
      throw this.#error('write', key, err);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobEntry> {
    validatePrefix(prefix);
    let token: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.#client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }),
          this.#deadline(),
        );
      } catch (err) {
        // no bucket yet: nothing was ever written
        if (nameOf(err) === 'NoSuchBucket') return;
        throw this.#error('read', '', err, `S3 list of s3://${this.bucket}/${prefix}`);
      }
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key, size_bytes: o.Size ?? 0, modified: o.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  keyFromUri(uri: string): string {
    return keyAfterPrefix(uri, `s3://${this.bucket}/`, `S3 bucket ${this.bucket}`);
  }

  async close(): Promise<void> {
    this.#client.destroy();
  }

  async #getBody(key: string): Promise<NonNullable<GetObjectCommandOutput['Body']>> {
    validateKey(key);
    let res: GetObjectCommandOutput;
    try {
      // the deadline also bounds reading the body, which the caller does after this resolves
      res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), this.#deadline());
    } catch (err) {
      throw this.#error('read', key, err);
    }
    if (res.Body === undefined) {
      throw new SonicError('INPUT_FETCH_FAILED', `S3 read of ${this.#uri(key)} returned no body`, { details: this.#details(key) });
    }
    return res.Body;
  }

  /** The sha256 of the version `etag` of a blob, streamed through a hasher (never held in memory). */
  async #hashVersion(key: string, etag: string): Promise<string> {
    let res: GetObjectCommandOutput;
    try {
      res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, IfMatch: etag }), this.#deadline());
    } catch (err) {
      throw this.#error('read', key, err);
    }
    if (!(res.Body instanceof Readable)) {
      throw new SonicError('INPUT_FETCH_FAILED', `S3 read of ${this.#uri(key)} returned no stream`, { details: this.#details(key) });
    }
    const hash = sha256Hasher();
    try {
      for await (const chunk of res.Body as AsyncIterable<Buffer>) hash.update(chunk);
    } catch (err) {
      throw this.#error('read', key, err);
    } finally {
      res.Body.destroy();
    }
    return hash.digest('hex');
  }

  /** Options of one SDK call: aborted when its total deadline passes. */
  #deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.#timeoutMs) };
  }

  /** Creates the bucket when missing, once per store; a failure lets the next write try again. */
  #ensureBucket(): Promise<void> {
    this.#bucketReady ??= this.#createBucketIfMissing().catch((err: unknown) => {
      this.#bucketReady = undefined;
      throw err;
    });
    return this.#bucketReady;
  }

  async #createBucketIfMissing(): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.bucket }), this.#deadline());
      return;
    } catch (err) {
      if (statusOf(err) !== 404) throw this.#error('write', '', err, `checking bucket ${this.bucket}`);
    }
    try {
      await this.#client.send(
        new CreateBucketCommand({
          Bucket: this.bucket,
          // us-east-1 is the one region S3 refuses as an explicit location constraint
          ...(this.#region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: this.#region as BucketLocationConstraint } }),
        }),
        this.#deadline(),
      );
    } catch (err) {
      if (nameOf(err) === 'BucketAlreadyOwnedByYou') return; // a concurrent writer created it
      throw this.#error('write', '', err, `creating bucket ${this.bucket}`);
    }
  }

  #uri(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  #details(key: string): Record<string, unknown> {
    return { store: 's3', endpoint: this.endpoint, bucket: this.bucket, ...(key === '' ? {} : { key }) };
  }

  /**
   * Maps an SDK failure: not found (on reads) is permanent, 5xx, throttling and network failures
   * are retryable, any other 4xx (denied, bad request, bad signature) is not. The message names
   * the endpoint, bucket and key and the S3 error, never the credentials.
   */
  #error(op: 'read' | 'write', key: string, err: unknown, action?: string): SonicError {
    if (err instanceof SonicError) return err;
    const status = statusOf(err);
    const name = nameOf(err);
    const what = action ?? `S3 ${op} of ${this.#uri(key)}`;
    const details = { ...this.#details(key), s3_error: name, http_status: status };
    if (op === 'read' && (status === 404 || NOT_FOUND_NAMES.has(name))) {
      return new SonicError('INPUT_NOT_FOUND', `blob ${this.#uri(key)} does not exist (${name})`, { cause: err, details });
    }
    const retryable = status === undefined || status >= 500 || status === 429 || status === 408;
    const reason = status === undefined ? `${name}: ${(err as SdkError | null)?.message ?? String(err)}` : `${name} (HTTP ${status})`;
    return new SonicError(op === 'read' ? 'INPUT_FETCH_FAILED' : 'STORAGE_WRITE_FAILED', `${what} at ${this.endpoint} failed: ${reason}`, {
      cause: err,
      retryable,
      details,
    });
  }
}

function sourceFileError(key: string, path: string, err: unknown): SonicError {
  const cause = err instanceof LocalIoError ? err.error : err;
  const errno = errnoOf(cause);
  if (errno === 'ENOENT' || errno === 'EISDIR' || errno === 'ENOTDIR') {
    return new SonicError('INPUT_NOT_FOUND', `the file to store as blob "${key}" does not exist: ${path}`, { cause, details: { key, store: 's3', path } });
  }
  return new SonicError('STORAGE_WRITE_FAILED', `the file to store as blob "${key}" could not be read: ${errno ?? String(cause)}`, {
    cause,
    details: { key, store: 's3', path, errno },
  });
}
