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

/** The control-batch bit of a record batch's attributes. */
const CONTROL = 0x20;

/** The records of one fetched partition from `from` on, and the last offset fetched (-1n when none). */
export function partitionRecords(topic: string, fetched: FetchedPartition, from: bigint): { records: InRecord[]; endOffset: bigint } {
  const batches = fetched.records ?? [];
  const last = batches[batches.length - 1];
  const endOffset = last ? last.firstOffset + BigInt(last.lastOffsetDelta) : -1n;
  // an aborted transaction whose abort marker lies past this response is still aborted (the broker
  // lists only aborted ones); the client keeps such records "for safety": drop them here
  const aborted = new Map<bigint, bigint>();
  for (const t of fetched.abortedTransactions ?? []) aborted.set(t.producerId, t.firstOffset);
  const records: InRecord[] = [];
  for (const b of batches) {
    if (b.attributes & CONTROL) {
      // an abort or commit marker ends the producer's transaction: its later batches are another one
      aborted.delete(b.producerId);
      continue;
    }
    const abortedFrom = aborted.get(b.producerId);
    if (abortedFrom !== undefined && b.firstOffset >= abortedFrom) continue;
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
