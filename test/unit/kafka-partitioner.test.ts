import { randomBytes, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { createPartitioner, murmur2 } from '../../src/kafka/partitioner.js';

const kafkajsMurmur2 = createRequire(import.meta.url)('kafkajs/src/producer/partitioners/default/murmur2.js') as (key: Buffer) => number;
const meta = (n: number, leaderless: number[] = []) =>
  Array.from({ length: n }, (_, i) => ({ partitionErrorCode: 0, partitionId: i, leader: leaderless.includes(i) ? -1 : 0, replicas: [0], isr: [0] }));

describe('partitioner', () => {
  it("hashes like the Java client (its Utils test vectors) and like kafkajs' murmur2", () => {
    const java: [string, number][] = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
      ['abc', 479470107],
    ];
    for (const [key, hash] of java) expect(murmur2(Buffer.from(key))).toBe(hash);
    for (let len = 0; len < 64; len++) {
      for (let i = 0; i < 20; i++) {
        const key = randomBytes(len);
        expect(murmur2(key)).toBe(kafkajsMurmur2(key));
      }
    }
    for (let i = 0; i < 2000; i++) {
      const key = Buffer.from(randomUUID());
      expect(murmur2(key)).toBe(kafkajsMurmur2(key));
    }
  });

  it('puts a keyed record where the Java client would, honours an explicit partition, and spreads unkeyed records over partitions with a leader', () => {
    const partition = createPartitioner()!;
    const key = 'a-little-bit-long-string';
    expect(partition({ topic: 't', partitionMetadata: meta(7), message: { key, value: null } })).toBe((-985981536 & 0x7fffffff) % 7);
    expect(partition({ topic: 't', partitionMetadata: meta(7), message: { key: Buffer.from(key), value: null } })).toBe((-985981536 & 0x7fffffff) % 7);
    expect(partition({ topic: 't', partitionMetadata: meta(7), message: { key, value: null, partition: 5 } })).toBe(5);
    const seen = new Set<number>();
    for (let i = 0; i < 30; i++) seen.add(partition({ topic: 'u', partitionMetadata: meta(4, [2]), message: { value: 'x' } }));
    expect([...seen].sort()).toEqual([0, 1, 3]);
  });
});
