/**
 * The stage consumer on @platformatic/kafka (see `../port.ts`): the same behaviour, as the runtime
 * sees it, as kafkajs' `GroupConsumer` (`../consumer.ts`), with the group's real generation.
 *
 * - Membership: the classic protocol through `joinGroup()` (KIP-848 loses the generation that a
 *   KIP-447 offset commit carries), sonicflow's assignors (`group.ts`). Every join event (the
 *   client rejoins by itself at a rebalance, without waiting for us) calls `onAssignment` with
 *   the generation id and member id the coordinator gave.
 * - Fetching: our own loop over `fetch()`, not the client's message stream, which pauses only as
 *   a whole and, after a rebalance, still delivers buffered records of partitions no longer
 *   owned. Only partitions owned in the current generation and not paused are fetched
 *   (read_committed), so backpressure is exact; a response is dropped when the generation
 *   changed, or the partition was paused, seeked or revoked while it was in flight. A partition
 *   starts at its committed offset, asked as a stable offset (`offsets.ts`), else at the log start.
 * - Memberships: a join under the same member id in the next generation (previous + 1) goes on
 *   with the partitions it retains: their fetch positions and pause flags stay. Any other join —
 *   a new member id (a restart after a failure, or the client rejoined by itself after
 *   UNKNOWN_MEMBER_ID or an expired session), or a skipped generation (the client retried a failed
 *   SyncGroup by itself) — is a new membership: every partition of it, as every partition newly
 *   assigned in a join, starts again from its committed offset and unpaused, whatever an earlier
 *   holder of it paused or seeked. The runtime tells a new membership from `onAssignment`'s info:
 *   a member id other than the last one, or a generation id other than the last one + 1.
 * - Failures: the broker is awaited at start; a network failure of the fetch loop is retried in
 *   the loop (metadata refreshed, backoff) up to {@link FETCH_NETWORK_RETRIES} times in a row,
 *   keeping the membership; a failed join, any other fetch failure or one retry too many restarts
 *   the client (a new member) with capped, jittered backoff; a bug in a handler (`CONSUMER_BUGS`) or a refusal by
 *   the authorizer crashes it for good, as the kafkajs consumer does.
 */
import { Consumer, FetchIsolationLevels, NetworkError, type ConsumerGroupJoinPayload } from '@platformatic/kafka';
import type { Logger } from '../../core/logger.js';
import { Backoff, sleep } from '../../core/retry.js';
import { authorizationFailure } from '../acls.js';
import type { Assignment, TopicPartition } from '../assignors.js';
import { untilConnected } from '../client.js';
import type { GroupConsumerEvents, GroupConsumerOptions } from '../consumer.js';
import type { KafkaConnection } from '../connection.js';
import { CONSUMER_BUGS } from '../io.js';
import type { GroupGeneration, StageConsumer } from '../port.js';
import { connectChecked } from './access.js';
import { chosenProtocol, groupOptions, offeredProtocols } from './group.js';
import { stableCommitted } from './offsets.js';
import { baseOptions, normalizeError } from './options.js';
import { partitionRecords } from './records.js';

const key = (tp: TopicPartition): string => `${tp.topic}\u0000${tp.partition}`;

/** Errors of a partition that a metadata refresh mends (a leader moved). */
const STALE_LEADER = new Set([
  'NOT_LEADER_OR_FOLLOWER',
  'LEADER_NOT_AVAILABLE',
  'FENCED_LEADER_EPOCH',
  'UNKNOWN_LEADER_EPOCH',
  'UNKNOWN_TOPIC_OR_PARTITION',
  'UNKNOWN_TOPIC_ID',
]);

/**
 * Network failures in a row (a dropped connection, a broker restarting) that the fetch loop rides
 * out itself, with a metadata refresh and backoff, before it restarts the client as a new member.
 */
const FETCH_NETWORK_RETRIES = 5;

/** A network failure of the client's (not a protocol error, a refusal or a handler's bug). */
function networkFailure(err: Error): boolean {
  return NetworkError.isRetryable(err) && (err as { type?: string }).type === undefined && authorizationFailure(err) === undefined;
}

/** The current membership: what the last join event said. */
interface Membership extends GroupGeneration {
  protocol: string;
  owned: Set<string>;
}

export class PkGroupConsumer implements StageConsumer {
  private consumer: Consumer | undefined;
  private readonly logger: Logger;
  private readonly restarts: Backoff;
  private readonly stopping = new AbortController();
  private state: 'idle' | 'connecting' | 'joining' | 'joined' | 'restarting' | 'stopped' = 'idle';
  private member: Membership | undefined;
  /** Partitions whose position is being resolved (see resolveInBackground). */
  private readonly resolving = new Set<string>();
  /** A failure to resolve a position, for the fetch loop to throw. */
  private resolveFailure: unknown;
  private topics: string[] = [];
  private events: GroupConsumerEvents | undefined;
  /** Fetch positions of owned partitions (the next offset to read); absent: from the committed offset. */
  private readonly positions = new Map<string, bigint>();
  private readonly paused = new Set<string>();
  /** Bumped on every pause, seek and join: a fetch answered under another stamp is dropped. */
  private readonly stamps = new Map<string, number>();
  private stampCounter = 0;
  /** Seeks so far (a batch the handler took moves the position unless it seeked meanwhile). */
  private seeks = 0;
  /** Wakes the fetch loop when it waits for an unpaused partition. */
  private wake: (() => void) | undefined;
  private running = Promise.resolve();

  constructor(
    private readonly connection: KafkaConnection,
    readonly options: GroupConsumerOptions,
  ) {
    this.logger = options.logger;
    this.restarts = new Backoff({ ...options.reconnect, jitter: 'decorrelated' });
  }

  get joined(): boolean {
    return this.state === 'joined';
  }

  private create(): Consumer {
    const o = this.options;
    const consumer: Consumer = new Consumer({
      ...baseOptions(this.connection),
      groupId: o.groupId,
      sessionTimeout: o.sessionTimeoutMs,
      // the client refuses a rebalance timeout below the session timeout
      rebalanceTimeout: Math.max(o.rebalanceTimeoutMs, o.sessionTimeoutMs),
      heartbeatInterval: o.heartbeatIntervalMs,
      autocommit: false,
      isolationLevel: FetchIsolationLevels.READ_COMMITTED,
      maxWaitTime: o.maxWaitMs,
      ...groupOptions(o, () => (consumer.memberId ? chosenProtocol(consumer.memberId, consumer.generationId) : undefined)),
    });
    // without a listener an error event (a rejoin that failed while another member closed) kills the process
    consumer.on('error', (err: unknown) => this.failed(consumer, normalizeError(err)));
    consumer.on('consumer:group:join', (p: ConsumerGroupJoinPayload) => this.onJoin(consumer, p));
    consumer.topics.trackAll(...this.topics);
    return consumer;
  }

  async start(topics: string[], events: GroupConsumerEvents, signal?: AbortSignal): Promise<void> {
    this.topics = topics;
    this.events = events;
    const abort = signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal;
    this.state = 'connecting';
    await this.connect(abort);
    if (abort.aborted) throw abort.reason;
    events.onConnected?.();
    this.running = this.run(this.consumer!);
  }

  /** Waits for the broker (and the topics' metadata) with a new client. */
  private async connect(signal: AbortSignal): Promise<void> {
    await untilConnected(
      'consumer',
      () =>
        connectChecked(this.connection, async () => {
          const consumer = (this.consumer ??= this.create());
          try {
            await consumer.metadata({ topics: this.topics });
          } catch (err) {
            this.consumer = undefined;
            await consumer.close(true).catch(() => undefined);
            throw normalizeError(err);
          }
        }),
      { backoff: this.options.reconnect, logger: this.logger, signal },
    );
  }

  /** Joins the group and fetches until the client fails or stops. */
  private async run(consumer: Consumer): Promise<void> {
    this.state = 'joining';
    try {
      await consumer.joinGroup({});
      await this.fetchLoop(consumer);
    } catch (err) {
      this.failed(consumer, normalizeError(err));
    }
  }

  private onJoin(consumer: Consumer, p: ConsumerGroupJoinPayload): void {
    if (consumer !== this.consumer || this.state === 'stopped') return;
    const generationId = p.generationId ?? consumer.generationId;
    const protocol = chosenProtocol(p.memberId, generationId, true) ?? offeredProtocols(this.options)[0]!;
    const assignment: Assignment = (p.assignments ?? []).flatMap((a) => a.partitions.map((partition) => ({ topic: a.topic, partition })));
    const owned = new Set(assignment.map(key));
    // the same membership goes on only under the same member id in the very next generation: after a
    // new member id (a restart, or the client rejoined after UNKNOWN_MEMBER_ID) or a skipped
    // generation (a failed SyncGroup the client retried by itself) another member may have held and
    // committed any partition meanwhile, so none of ours is retained
    const prev = this.member;
    const goesOn = prev !== undefined && prev.memberId === p.memberId && generationId === prev.generationId + 1;
    const retained = (k: string): boolean => goesOn && prev.owned.has(k) && owned.has(k);
    // a retained partition fetches on from its position and stays paused if it was; any other one
    // starts from its committed offset, unpaused (a pause of an earlier owner of it must not outlive it)
    for (const k of [...this.positions.keys()]) if (!retained(k)) this.positions.delete(k);
    for (const k of [...this.paused]) if (!retained(k)) this.paused.delete(k);
    for (const k of owned) if (!retained(k)) this.touch(k);
    this.member = { groupId: this.options.groupId, memberId: p.memberId, generationId, protocol, owned };
    this.state = 'joined';
    this.restarts.reset();
    this.events!.onAssignment(assignment, { generationId, memberId: p.memberId, protocol });
    this.wake?.();
  }

  /** The client failed: crash for good on a bug or a refusal, else restart it (a new member). */
  private failed(consumer: Consumer, err: Error): void {
    if (consumer !== this.consumer || this.state === 'stopped' || this.state === 'restarting') return;
    this.consumer = undefined;
    this.member = undefined;
    // the next join is a new member: every partition starts again from its committed offset
    this.positions.clear();
    void consumer.close(true).catch(() => undefined);
    if (CONSUMER_BUGS.has(err.name) || authorizationFailure(err)) {
      this.state = 'stopped';
      this.events!.onCrash(err);
      return;
    }
    this.state = 'restarting';
    this.running = this.restart(err);
  }

  private async restart(err: Error): Promise<void> {
    const delay = this.restarts.next();
    this.logger.warn({ err, restart_in_ms: delay }, 'consumer failed; restarting it');
    try {
      await sleep(delay, this.stopping.signal);
      this.state = 'connecting';
      await this.connect(this.stopping.signal);
      if (this.stopping.signal.aborted) return;
      await this.run(this.consumer!);
    } catch (e) {
      if (this.stopping.signal.aborted) return;
      this.state = 'stopped';
      this.events!.onCrash(e as Error);
    }
  }

  /** Fetches the owned, unpaused partitions, one request per leader, until the client changes. */
  private async fetchLoop(consumer: Consumer): Promise<void> {
    const backoff = new Backoff({ ...this.options.reconnect, jitter: 'decorrelated' });
    let failures = 0;
    while (consumer === this.consumer && !this.stopping.signal.aborted) {
      try {
        await this.fetchRound(consumer);
        failures = 0;
        backoff.reset();
      } catch (err) {
        const e = normalizeError(err);
        if (!networkFailure(e) || ++failures > FETCH_NETWORK_RETRIES) throw e;
        const delay = backoff.next();
        this.logger.warn({ err: e, attempt: failures, retry_in_ms: delay }, 'fetch failed; refreshing metadata and fetching again');
        try {
          await sleep(delay, this.stopping.signal);
        } catch {
          return;
        }
        await consumer.metadata({ topics: this.topics, forceUpdate: true }).catch(() => undefined);
      }
    }
  }

  /** One round: the positions of newly owned partitions, then one fetch per leader of the owned, unpaused ones. */
  private async fetchRound(consumer: Consumer): Promise<void> {
    const member = this.member;
    const wanted = member ? [...member.owned].filter((k) => !this.paused.has(k)) : [];
    if (!member || wanted.length === 0) {
      await this.idle();
      return;
    }
    const tps = wanted.map((k) => {
      const [topic, p] = k.split('\u0000');
      return { topic: topic!, partition: Number(p) };
    });
    // positions resolve partition by partition, beside the fetching: one partition whose offset a
    // previous owner's open transaction holds unstable (until that transaction ends, up to its
    // timeout) must not hold up the others
    if (this.resolveFailure !== undefined) {
      const err = this.resolveFailure;
      this.resolveFailure = undefined;
      throw err;
    }
    for (const tp of tps) if (!this.positions.has(key(tp)) && !this.resolving.has(key(tp))) this.resolveInBackground(consumer, tp);
    // nothing to fetch until a position is known: wait for one (or a pause, a seek, a join)
    if (!tps.some((tp) => this.positions.has(key(tp)))) {
      await this.idle();
      return;
    }
    const metadata = await consumer.metadata({ topics: [...new Set(tps.map((tp) => tp.topic))] });
    const byLeader = new Map<number, TopicPartition[]>();
    for (const tp of tps) {
      const leader = metadata.topics.get(tp.topic)?.partitions[tp.partition]?.leader;
      if (leader === undefined || leader < 0) continue;
      byLeader.set(leader, [...(byLeader.get(leader) ?? []), tp]);
    }
    // every fetch settled before the next round: a round must never ask a partition while one is in flight
    const settled = await Promise.allSettled([...byLeader].map(([node, list]) => this.fetchFrom(consumer, member, node, list, metadata.topics)));
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Waits for the next fetch round: up to the fetch wait, or until something wakes the loop. */
  private async idle(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      setTimeout(resolve, this.options.maxWaitMs);
    });
    this.wake = undefined;
  }

  /** One fetch from `node`; each partition's records go to `onBatch` unless its state moved meanwhile. */
  private async fetchFrom(consumer: Consumer, member: Membership, node: number, tps: TopicPartition[], topics: Map<string, { id: string }>): Promise<void> {
    const asked = new Map(
      tps.filter((tp) => this.positions.has(key(tp))).map((tp) => [key(tp), { tp, from: this.positions.get(key(tp))!, stamp: this.stamps.get(key(tp)) ?? 0 }]),
    );
    if (asked.size === 0) return;
    const byTopic = new Map<string, TopicPartition[]>();
    for (const { tp } of asked.values()) byTopic.set(tp.topic, [...(byTopic.get(tp.topic) ?? []), tp]);
    const maxBytes = this.options.maxBytesPerPartition ?? 1_048_576;
    let response;
    try {
      response = await consumer.fetch({
        node,
        isolationLevel: FetchIsolationLevels.READ_COMMITTED,
        maxWaitTime: this.options.maxWaitMs,
        minBytes: 1,
        maxBytes: maxBytes * asked.size,
        topics: [...byTopic].map(([topic, list]) => ({
          topicId: topics.get(topic)!.id,
          partitions: list.map((tp) => ({
            partition: tp.partition,
            fetchOffset: asked.get(key(tp))!.from,
            partitionMaxBytes: maxBytes,
            currentLeaderEpoch: -1,
            lastFetchedEpoch: -1,
          })),
        })),
      });
    } catch (err) {
      const e = normalizeError(err) as Error & { type?: string };
      if (e.type === 'OFFSET_OUT_OF_RANGE')
        return this.toLogStart(
          consumer,
          [...asked.values()].map((a) => a.tp),
        );
      if (e.type && STALE_LEADER.has(e.type)) return void (await consumer.metadata({ topics: [...byTopic.keys()], forceUpdate: true }));
      throw e;
    }
    const names = new Map([...topics].map(([name, t]) => [t.id, name]));
    for (const t of response.responses) {
      const topic = names.get(t.topicId);
      if (topic === undefined) continue;
      for (const fetched of t.partitions) {
        const k = key({ topic, partition: fetched.partitionIndex });
        const a = asked.get(k);
        // the generation changed, or the partition was paused, seeked or revoked while this was in flight
        if (!a || this.member !== member || !member.owned.has(k) || this.paused.has(k) || (this.stamps.get(k) ?? 0) !== a.stamp) continue;
        const { records, endOffset } = partitionRecords(topic, fetched, a.from);
        if (endOffset < a.from) continue;
        const info = { endOffset: endOffset.toString(), fetchedOffset: a.from.toString(), highWatermark: fetched.highWatermark.toString() };
        if (records.length === 0) {
          this.positions.set(k, endOffset + 1n);
          this.events!.onMarkersOnly(topic, fetched.partitionIndex, info.endOffset);
        } else {
          const seeks = this.seeks;
          // taken: fetch on after it, unless the handler seeked the partition (it may pause it and still take it)
          if (this.events!.onBatch(topic, fetched.partitionIndex, records, info) && this.seeks === seeks) this.positions.set(k, endOffset + 1n);
        }
      }
    }
  }

  /** Positions of newly owned partitions: the committed offset (stable), else the log start (kafkajs' fromBeginning). */
  /**
   * Resolves one partition's position apart from the fetch loop. While a previous owner's
   * transaction keeps the committed offset unstable, it asks again for as long as this membership
   * lasts; any other failure goes to the fetch loop, which restarts the client as before.
   */
  private resolveInBackground(consumer: Consumer, tp: TopicPartition): void {
    const k = key(tp);
    const member = this.member;
    this.resolving.add(k);
    void (async () => {
      for (;;) {
        try {
          await this.resolvePositions(consumer, [tp]);
          return;
        } catch (err) {
          if (this.member !== member || this.stopping.signal.aborted) return;
          if ((err as { type?: string }).type !== 'UNSTABLE_OFFSET_COMMIT') {
            this.resolveFailure ??= err;
            return;
          }
          this.logger.warn(
            { partition: `${tp.topic}/${tp.partition}` },
            "the partition's committed offset is still unstable (a previous owner's transaction is open): waiting for it to end",
          );
        }
      }
    })().finally(() => {
      this.resolving.delete(k);
      this.wake?.();
    });
  }

  private async resolvePositions(consumer: Consumer, tps: TopicPartition[]): Promise<void> {
    if (tps.length === 0) return;
    const member = this.member;
    const committed = await stableCommitted(consumer, this.options.groupId, tps, this.stopping.signal);
    const missing = tps.filter((tp) => (committed.get(key(tp)) ?? -1n) < 0n);
    const earliest = missing.length > 0 ? await this.earliest(consumer, missing) : new Map<string, bigint>();
    for (const tp of tps) {
      const k = key(tp);
      // a seek while we asked wins
      if (this.member !== member || this.positions.has(k)) continue;
      const c = committed.get(k) ?? -1n;
      this.positions.set(k, c >= 0n ? c : (earliest.get(k) ?? 0n));
    }
  }

  private async earliest(consumer: Consumer, tps: TopicPartition[]): Promise<Map<string, bigint>> {
    const topics = [...new Set(tps.map((tp) => tp.topic))];
    const offsets = await consumer.listOffsets({ topics, timestamp: -2n });
    return new Map(tps.map((tp) => [key(tp), offsets.get(tp.topic)?.[tp.partition] ?? 0n]));
  }

  private async toLogStart(consumer: Consumer, tps: TopicPartition[]): Promise<void> {
    const member = this.member;
    const low = await this.earliest(consumer, tps);
    // a join meanwhile: the new membership starts from the committed offsets
    if (this.member !== member) return;
    for (const tp of tps) if (low.has(key(tp))) this.positions.set(key(tp), low.get(key(tp))!);
  }

  private touch(tp: TopicPartition | string): string {
    const k = typeof tp === 'string' ? tp : key(tp);
    this.stamps.set(k, ++this.stampCounter);
    return k;
  }

  pause(tp: TopicPartition): void {
    this.paused.add(this.touch(tp));
  }

  resume(tp: TopicPartition): void {
    if (this.paused.delete(this.touch(tp))) this.wake?.();
  }

  seek(tp: TopicPartition, offset: string): void {
    this.seeks += 1;
    this.positions.set(this.touch(tp), BigInt(offset));
    this.wake?.();
  }

  generation(): GroupGeneration | undefined {
    const m = this.member;
    return m && this.state === 'joined' ? { groupId: m.groupId, memberId: m.memberId, generationId: m.generationId } : undefined;
  }

  async committed(tp: TopicPartition): Promise<bigint> {
    const consumer = this.consumer;
    if (!consumer) throw new Error('consumer not connected');
    return (await stableCommitted(consumer, this.options.groupId, [tp], this.stopping.signal)).get(key(tp)) ?? -1n;
  }

  async logStart(tp: TopicPartition): Promise<bigint> {
    const consumer = this.consumer;
    if (!consumer) throw new Error('consumer not connected');
    return (await this.earliest(consumer, [tp])).get(key(tp)) ?? 0n;
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    this.stopping.abort(new Error('consumer stopped'));
    this.wake?.();
    const consumer = this.consumer;
    this.consumer = undefined;
    this.member = undefined;
    await this.running.catch(() => undefined);
    if (consumer) {
      await (consumer.leaveGroup(false) as unknown as Promise<void>).catch(() => undefined);
      await consumer.close(true).catch(() => undefined);
    }
  }
}
