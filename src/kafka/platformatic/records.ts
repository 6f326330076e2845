/**
 * One partition of a @platformatic/kafka fetch response as the stage runtime takes it: the data
 * records from the fetch offset on (the broker returns whole batches, so the first may start
 * before it), without control batches (transaction markers) and without the records of aborted
 * transactions, and the last offset the response covered, markers included.
 */
import { headersToStrings, type InRecord, type RawHeaders } from '../io.js';

/** One partition of the client's fetch response, as far as this module reads it. */
export interface FetchedPartition {
  partitionIndex: number;
  abortedTransactions: { producerId: bigint; firstOffset: bigint }[] | null;
  records?:
    | {
        firstOffset: bigint;
        lastOffsetDelta: number;
        attributes: number;
        producerId: bigint;
        firstTimestamp: bigint;
        records: { offsetDelta: number; timestampDelta: bigint; key: Buffer | null; value: Buffer | null; headers: [Buffer | null, Buffer | null][] }[];
      }[]
    | null;
}

/** A record's headers (key and value bytes, a key possibly repeated) as the runtime's strings. */
function headersOf(pairs: readonly [Buffer | null, Buffer | null][]): Record<string, string> {
  const raw: Record<string, Buffer[]> = {};
  for (const [k, v] of pairs) if (k !== null && v !== null) (raw[k.toString('utf8')] ??= []).push(v);
  return headersToStrings(raw as RawHeaders);
}

/** The transactional and control-batch bits of a record batch's attributes. */
const TRANSACTIONAL = 0x10;
const CONTROL = 0x20;

/** A control batch whose marker is an abort (control record key: int16 version, int16 type; 0 abort, 1 commit). */
function isAbortMarker(b: { records: { key: Buffer | null }[] }): boolean {
  const k = b.records[0]?.key;
  return k !== null && k !== undefined && k.length >= 4 && k.readInt16BE(2) === 0;
}

/**
 * The records of one fetched partition from `from` on, and the last offset fetched (-1n when none).
 *
 * Aborted transactions are dropped as the Java consumer does (`CompletedFetch`): the broker lists
 * every aborted transaction the response overlaps (producer id, first offset), which may be several
 * of one producer (with one transactional producer per stage, every output partition is a stream of
 * that producer's transactions). Going through the batches in order, a listed transaction becomes
 * "open" once a batch reaches its first offset; a transactional data batch of a producer with an
 * open aborted transaction is dropped; that producer's abort marker closes it (a commit marker
 * closes nothing: it ends a transaction that was not listed). An aborted transaction whose marker
 * lies past this response stays open to its end.
 */
export function partitionRecords(topic: string, fetched: FetchedPartition, from: bigint): { records: InRecord[]; endOffset: bigint } {
  const batches = fetched.records ?? [];
  const last = batches[batches.length - 1];
  const endOffset = last ? last.firstOffset + BigInt(last.lastOffsetDelta) : -1n;
  const pending = [...(fetched.abortedTransactions ?? [])].sort((x, y) => (x.firstOffset < y.firstOffset ? -1 : x.firstOffset > y.firstOffset ? 1 : 0));
  let next = 0;
  const abortedProducers = new Set<bigint>();
  const records: InRecord[] = [];
  for (const b of batches) {
    if (b.producerId >= 0n) {
      const lastOffset = b.firstOffset + BigInt(b.lastOffsetDelta);
      while (next < pending.length && pending[next]!.firstOffset <= lastOffset) abortedProducers.add(pending[next++]!.producerId);
      if (b.attributes & CONTROL) {
        if (isAbortMarker(b)) abortedProducers.delete(b.producerId);
      } else if (b.attributes & TRANSACTIONAL && abortedProducers.has(b.producerId)) continue;
    }
    // markers are no records of the stage's
    if (b.attributes & CONTROL) continue;
    for (const r of b.records) {
      const offset = b.firstOffset + BigInt(r.offsetDelta);
      if (offset < from) continue;
      records.push({
        topic,
        partition: fetched.partitionIndex,
        offset: offset.toString(),
        key: r.key ? r.key.toString('utf8') : null,
        value: r.value,
        headers: headersOf(r.headers),
        timestamp: Number(b.firstTimestamp + r.timestampDelta),
      });
    }
  }
  return { records, endOffset };
}
