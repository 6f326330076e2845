/**
 * The stage producer's shared transactions on a KIP-447 client (src/runtime/group-commit.ts): which
 * batches go into which transaction, with which generation, and what a failure does to the batches
 * and to the producer. A scripted producer stands in for the client (no broker).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { OutRecord, ProducedOffset } from '../../src/kafka/io.js';
import type { GroupGeneration, InputOffset, TransactionalProducer } from '../../src/kafka/port.js';
import { GroupCommit, landedFor } from '../../src/runtime/group-commit.js';

interface Txn {
  records: (OutRecord & { topic: string })[];
  inputs: InputOffset[];
  generation: GroupGeneration | undefined;
}

/** Makes a transaction fail with the error it returns (the scripted producers of these tests consult it). */
let failWhen: (txn: Txn) => Error | false = () => false;

/** A producer that records each transaction and answers as `script` says (by transaction number). */
function scripted(script: (n: number, txn: Txn) => Promise<void> | void = () => undefined) {
  const txns: Txn[] = [];
  let connects = 0;
  let closes = 0;
  const make = (): TransactionalProducer => {
    const p: TransactionalProducer = {
      transactionalId: 'stage-1',
      connect: () => {
        connects += 1;
        return Promise.resolve(p);
      },
      publish: async (records, input, generation) => {
        const txn = { records, inputs: Array.isArray(input) ? input : [input], generation };
        txns.push(txn);
        await script(txns.length, txn);
        const failure = failWhen(txn);
        if (failure) throw failure;
        const first = new Map<string, ProducedOffset>();
        records.forEach((r, i) => {
          const k = `${r.topic}/${r.partition ?? 0}`;
          if (!first.has(k)) first.set(k, { topic: r.topic, partition: r.partition ?? 0, baseOffset: BigInt(100 * txns.length + i) });
        });
        return [...first.values()];
      },
      close: () => {
        closes += 1;
        return Promise.resolve();
      },
    };
    return p;
  };
  return { txns, make, connects: () => connects, closes: () => closes };
}

const GEN: GroupGeneration = { groupId: 'g', memberId: 'm-1', generationId: 7 };
const rec = (topic: string, partition: number, key = 'k'): OutRecord & { topic: string } => ({ topic, partition, key, value: Buffer.from(key) });
const input = (partition: number, offset: number): InputOffset => ({ groupId: 'g', topic: 'in', partition, offset: String(offset) });
const fenced = (type: string): Error => Object.assign(new Error(type), { type });

/** A group commit whose first transaction waits for `release()` (so the next batches queue behind it). */
function firstHeld(options: { maxRecords?: number } = {}) {
  let release!: () => void;
  const first = new Promise<void>((r) => (release = r));
  const p = scripted((n) => (n === 1 ? first : undefined));
  const gc = new GroupCommit({ transactionalId: 'stage-1', producer: p.make, generation: () => GEN, ...options });
  return { p, gc, release };
}

afterEach(() => {
  failWhen = () => false;
});

describe('GroupCommit', () => {
  it('commits a lone batch at once, and gathers the batches handed over meanwhile into the next transaction with the current generation', async () => {
    const { p, gc, release } = firstHeld();
    const a = gc.publish([rec('out', 0)], input(0, 10));
    await new Promise((r) => setImmediate(r));
    expect(p.txns).toHaveLength(1);
    const b = gc.publish([rec('out', 1)], input(1, 20));
    const c = gc.publish([rec('out', 2)], input(2, 30));
    release();
    await Promise.all([a, b, c]);
    expect(p.txns.map((t) => t.inputs.map((i) => i.partition))).toEqual([[0], [1, 2]]);
    expect(p.txns.every((t) => t.generation === GEN)).toBe(true);
    expect(p.connects()).toBe(1);
  });

  it('keeps a transaction under maxRecords (a larger batch goes alone)', async () => {
    const { p, gc, release } = firstHeld({ maxRecords: 3 });
    const all = [gc.publish([rec('out', 0)], input(0, 1))];
    await new Promise((r) => setImmediate(r));
    all.push(
      gc.publish([rec('out', 1), rec('out', 1)], input(1, 2)),
      gc.publish([rec('out', 2), rec('out', 2)], input(2, 3)),
      gc.publish([rec('out', 3), rec('out', 3), rec('out', 3), rec('out', 3)], input(3, 4)),
    );
    release();
    await Promise.all(all);
    expect(p.txns.map((t) => t.records.length)).toEqual([1, 2, 2, 4]);
  });

  it('fails every batch of a failed transaction; keeps the producer after a group fence, replaces it after a producer fence', async () => {
    const p = scripted((n) => {
      if (n === 1) throw fenced('ILLEGAL_GENERATION');
      if (n === 3) throw fenced('PRODUCER_FENCED');
    });
    const gc = new GroupCommit({ transactionalId: 'stage-1', producer: p.make, generation: () => GEN });
    await expect(gc.publish([rec('out', 0)], input(0, 1))).rejects.toMatchObject({ type: 'ILLEGAL_GENERATION' });
    await gc.publish([rec('out', 0)], input(0, 1));
    expect(p.connects()).toBe(1);
    expect(p.closes()).toBe(0);
    await expect(gc.publish([rec('out', 0)], input(0, 2))).rejects.toMatchObject({ type: 'PRODUCER_FENCED' });
    expect(p.closes()).toBe(1);
    await gc.publish([rec('out', 0)], input(0, 2));
    expect(p.connects()).toBe(2);
  });

  it('refuses to commit without a generation (between generations), as a group fence, without sending anything', async () => {
    const p = scripted();
    const member: { gen?: GroupGeneration } = {};
    const gc = new GroupCommit({ transactionalId: 'stage-1', producer: p.make, generation: () => member.gen });
    await expect(gc.publish([rec('out', 0)], input(0, 1))).rejects.toMatchObject({ type: 'REBALANCE_IN_PROGRESS' });
    expect(p.txns).toHaveLength(0);
    member.gen = GEN;
    await gc.publish([rec('out', 0)], input(0, 1));
    expect(p.connects()).toBe(1);
  });

  it('leaves out a batch whose partition was revoked before its transaction began (the coordinator checks only the generation)', async () => {
    const { p, gc, release } = firstHeld();
    const a = gc.publish([rec('out', 0)], input(0, 1));
    await new Promise((r) => setImmediate(r));
    let owned = true;
    const revoked = gc.publish([rec('out', 1)], input(1, 5), () => owned);
    const kept = gc.publish([rec('out', 2)], input(2, 6), () => true);
    owned = false; // the rebalance comes while the first transaction commits
    release();
    await a;
    await expect(revoked).rejects.toMatchObject({ type: 'REBALANCE_IN_PROGRESS', message: expect.stringContaining('in/1 was revoked') });
    await kept;
    expect(p.txns.map((t) => t.inputs.map((i) => i.partition))).toEqual([[0], [2]]);
  });

  it('tells each batch where its own topic-partitions landed', () => {
    const landed: ProducedOffset[] = [
      { topic: 'changelog', partition: 3, baseOffset: 40n },
      { topic: 'changelog', partition: 4, baseOffset: 50n },
      { topic: 'out', partition: 1, baseOffset: 7n },
    ];
    expect(landedFor(landed, [rec('changelog', 3), { topic: 'out', key: 'x', value: null }])).toEqual([landed[0], landed[2]]);
  });

  it('fails the batches still waiting when closed, and closes the producer', async () => {
    const { p, gc, release } = firstHeld();
    const a = gc.publish([rec('out', 0)], input(0, 1));
    await new Promise((r) => setImmediate(r));
    const b = gc.publish([rec('out', 1)], input(1, 1));
    const closing = gc.close();
    await expect(b).rejects.toThrow(/closed/);
    release();
    await a;
    await closing;
    expect(p.txns).toHaveLength(1);
    expect(p.closes()).toBe(1);
    await expect(gc.publish([rec('out', 0)], input(0, 2))).rejects.toThrow(/closed/);
  });

  it('replaces the producer after a group fence whose abort the broker did not confirm (its transaction may still be open)', async () => {
    const p = scripted((n) => {
      if (n === 1) throw Object.assign(fenced('ILLEGAL_GENERATION'), { abortUnconfirmed: true });
    });
    const gc = new GroupCommit({ transactionalId: 'stage-1', producer: p.make, generation: () => GEN });
    await expect(gc.publish([rec('out', 0)], input(0, 1))).rejects.toMatchObject({ type: 'ILLEGAL_GENERATION' });
    expect(p.closes()).toBe(1);
    await gc.publish([rec('out', 0)], input(0, 1));
    expect(p.connects()).toBe(2);
  });

  it('closes a producer whose connection completes after the stage stopped, and shares nothing', async () => {
    let connected!: () => void;
    const slow = new Promise<void>((r) => (connected = r));
    const p = scripted();
    const make = (): TransactionalProducer => {
      const inner = p.make();
      return { ...inner, connect: async () => (await slow, inner.connect()) };
    };
    const gc = new GroupCommit({ transactionalId: 'stage-1', producer: make, generation: () => GEN });
    const sharing = gc.share(() => true);
    await gc.close();
    connected();
    await expect(sharing).rejects.toThrow(/closed/);
    expect(p.closes()).toBe(1);
  });

  it("tries a shared transaction that failed for a record's reason again batch by batch: only the batch at fault fails", async () => {
    const { p, gc, release } = firstHeld();
    const a = gc.publish([rec('out', 0)], input(0, 1));
    await new Promise((r) => setImmediate(r));
    const tooLarge = Object.assign(new Error('too large'), { type: 'MESSAGE_TOO_LARGE' });
    const script = p.txns; // the transactions so far: the held first one
    const b = gc.publish([rec('out', 1, 'ok-1')], input(1, 5));
    const c = gc.publish([rec('out', 2, 'big')], input(2, 6));
    const d = gc.publish([rec('out', 3, 'ok-3')], input(3, 7));
    failWhen = (t) => t.records.some((r) => r.key === 'big') && tooLarge;
    release();
    await a;
    await expect(c).rejects.toBe(tooLarge);
    await Promise.all([b, d]);
    expect(script.map((t) => t.inputs.map((i) => i.partition))).toEqual([[0], [1, 2, 3], [1], [2], [3]]);
    expect(p.connects()).toBe(1);
  });
});
