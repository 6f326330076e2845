/**
 * The read_committed record filter of the @platformatic/kafka stage consumer
 * (src/kafka/platformatic/records.ts) on fetch responses in the shape the client returns them:
 * record batches with their attributes bits (0x10 transactional, 0x20 control), producer id, first
 * offset and last offset delta; control batches of one record whose key is (int16 version, int16
 * type: 0 abort, 1 commit); and the response's list of aborted transactions (producer id, first
 * offset).
 */
import { describe, expect, it } from 'vitest';
import { partitionRecords, type FetchedPartition } from '../../src/kafka/platformatic/records.js';

type Batch = NonNullable<FetchedPartition['records']>[number];

const controlKey = (type: 0 | 1): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt16BE(0, 0);
  b.writeInt16BE(type, 2);
  return b;
};

/** A batch of data records at offsets first..first+n-1. */
function data(producerId: bigint, first: number, n: number, transactional = true): Batch {
  return {
    firstOffset: BigInt(first),
    lastOffsetDelta: n - 1,
    attributes: transactional ? 0x10 : 0,
    producerId,
    firstTimestamp: 1_700_000_000_000n,
    records: Array.from({ length: n }, (_, i) => ({
      offsetDelta: i,
      timestampDelta: 0n,
      key: Buffer.from(`k${first + i}`),
      value: Buffer.from(`v${first + i}`),
      headers: [],
    })),
  };
}

/** A transaction marker at `offset`. */
function marker(producerId: bigint, offset: number, kind: 'abort' | 'commit'): Batch {
  return {
    firstOffset: BigInt(offset),
    lastOffsetDelta: 0,
    attributes: 0x10 | 0x20,
    producerId,
    firstTimestamp: 1_700_000_000_000n,
    records: [{ offsetDelta: 0, timestampDelta: 0n, key: controlKey(kind === 'abort' ? 0 : 1), value: Buffer.alloc(6), headers: [] }],
  };
}

const fetched = (records: Batch[], aborted: [bigint, number][]): FetchedPartition => ({
  partitionIndex: 3,
  abortedTransactions: aborted.map(([producerId, first]) => ({ producerId, firstOffset: BigInt(first) })),
  records,
});

const offsets = (f: FetchedPartition, from = 0n): number[] => partitionRecords('t', f, from).records.map((r) => Number(r.offset));

const P = 7n;
const Q = 9n;

describe('partitionRecords under read_committed', () => {
  it('A: aborted, committed, aborted transactions of one producer: only the committed records', () => {
    const f = fetched(
      [data(P, 10, 2), marker(P, 12, 'abort'), data(P, 13, 2), marker(P, 15, 'commit'), data(P, 16, 2), marker(P, 18, 'abort')],
      [
        [P, 10],
        [P, 16],
      ],
    );
    expect(offsets(f)).toEqual([13, 14]);
    expect(partitionRecords('t', f, 0n).endOffset).toBe(18n);
    // the broker's list in any order
    expect(offsets({ ...f, abortedTransactions: [...f.abortedTransactions!].reverse() })).toEqual([13, 14]);
  });

  it('B: a committed transaction, then an aborted one whose marker lies past the response: only the committed records', () => {
    const f = fetched([data(P, 20, 3), marker(P, 23, 'commit'), data(P, 24, 2), data(P, 26, 2)], [[P, 24]]);
    expect(offsets(f)).toEqual([20, 21, 22]);
    expect(partitionRecords('t', f, 0n).endOffset).toBe(27n);
  });

  it('a commit marker leaves an aborted transaction of the same producer that started before it aborted', () => {
    // the aborted transaction is listed from 30 on; a commit marker of an earlier transaction at 29 changes nothing
    const f = fetched([data(P, 27, 2), marker(P, 29, 'commit'), data(P, 30, 2), marker(P, 32, 'abort'), data(P, 33, 1), marker(P, 34, 'commit')], [[P, 30]]);
    expect(offsets(f)).toEqual([27, 28, 33]);
  });

  it('mixed producers: each aborted transaction drops its own producer only; plain (non-transactional) batches always arrive', () => {
    const f = fetched(
      [
        data(P, 40, 2),
        data(Q, 42, 2),
        data(P, 44, 1),
        marker(P, 45, 'abort'),
        data(-1n, 46, 1, false),
        data(Q, 47, 1),
        marker(Q, 48, 'commit'),
        data(P, 49, 2),
        data(Q, 51, 2),
        marker(Q, 53, 'abort'),
        marker(P, 54, 'commit'),
        data(Q, 55, 1),
      ],
      [
        [P, 40],
        [Q, 51],
      ],
    );
    expect(offsets(f)).toEqual([42, 43, 46, 47, 49, 50, 55]);
  });

  it('a batch that straddles the fetch offset: records before it are left out, control batches never delivered', () => {
    const f = fetched([data(P, 60, 4), marker(P, 64, 'commit'), data(P, 65, 2), marker(P, 67, 'abort')], [[P, 65]]);
    expect(offsets(f, 62n)).toEqual([62, 63]);
    const markersOnly = fetched([marker(P, 70, 'commit')], []);
    expect(partitionRecords('t', markersOnly, 70n)).toEqual({ records: [], endOffset: 70n });
  });

  it('an aborted transaction listed from before the response (its first batch already consumed) drops its later batches', () => {
    const f = fetched([data(P, 81, 2), marker(P, 83, 'abort'), data(P, 84, 1), marker(P, 85, 'commit')], [[P, 78]]);
    expect(offsets(f, 81n)).toEqual([84]);
  });

  it('record fields: key, value, headers and timestamp', () => {
    const b = data(P, 90, 1, false);
    b.records[0]!.headers = [
      [Buffer.from('h'), Buffer.from('x')],
      [null, Buffer.from('ignored')],
    ];
    b.records[0]!.timestampDelta = 5n;
    const [r] = partitionRecords('t', fetched([b], []), 0n).records;
    expect(r).toMatchObject({ topic: 't', partition: 3, offset: '90', key: 'k90', headers: { h: 'x' }, timestamp: 1_700_000_000_005 });
    expect(r!.value?.toString()).toBe('v90');
  });
});
