/**
 * Topic administration: what exists, with how many partitions and which configs; create, grow
 * and reconfigure topics; delete (throw-away topologies: tests, benchmarks). Never shrinks anything.
 */
import type { Admin } from 'kafkajs';
import { ConfigResourceTypes } from './kafkajs.js';
import { retry } from '../core/retry.js';
import { authorizationFailure } from './acls.js';
import { AdminConnection, type KafkaClient } from './handle.js';

export interface TopicState {
  name: string;
  partitions: number;
  replicationFactor: number;
  /** Non-default configs only. */
  configs: Record<string, string>;
}

export interface NewTopic {
  name: string;
  partitions: number;
  replicationFactor: number;
  configs: Record<string, string>;
}

export class TopicAdmin {
  private readonly connection: AdminConnection;
  private readonly admin: Admin;

  constructor(kafka: KafkaClient) {
    this.connection = new AdminConnection(kafka);
    this.admin = this.connection.admin;
  }

  async connect(): Promise<this> {
    await this.connection.connect();
    return this;
  }

  close(): Promise<void> {
    return this.connection.close();
  }

  /** How many brokers the cluster has (the most replicas a partition can have). */
  async brokerCount(): Promise<number> {
    return (await this.admin.describeCluster()).brokers.length;
  }

  /** Names of every topic, internal ones excluded. */
  async list(): Promise<string[]> {
    return (await this.admin.listTopics()).filter((t) => !t.startsWith('__')).sort();
  }

  /**
   * Partitions, replication and non-default configs of each existing topic among `names`.
   * `configs: false` leaves the configs out (empty), so the client needs no DESCRIBE_CONFIGS.
   */
  async describe(names: string[], opts: { configs?: boolean } = {}): Promise<Map<string, TopicState>> {
    const existing = new Set(await this.admin.listTopics());
    const present = names.filter((n) => existing.has(n));
    const out = new Map<string, TopicState>();
    if (present.length === 0) return out;
    const meta = await this.admin.fetchTopicMetadata({ topics: present });
    const configs =
      opts.configs === false
        ? { resources: [] }
        : await this.admin.describeConfigs({
            includeSynonyms: false,
            resources: present.map((name) => ({ type: ConfigResourceTypes.TOPIC, name })),
          });
    const cfgByTopic = new Map(
      configs.resources.map((r) => [
        r.resourceName,
        Object.fromEntries(r.configEntries.filter((e) => !e.isDefault && e.configValue !== null).map((e) => [e.configName, e.configValue])),
      ]),
    );
    for (const t of meta.topics) {
      out.set(t.name, {
        name: t.name,
        partitions: t.partitions.length,
        replicationFactor: t.partitions[0]?.replicas.length ?? 0,
        configs: cfgByTopic.get(t.name) ?? {},
      });
    }
    return out;
  }

  /**
   * Which of `names` the broker's authorizer hides from this client (no DESCRIBE): they look
   * absent in a listing, and asking for their metadata answers TOPIC_AUTHORIZATION_FAILED.
   */
  async denied(names: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const topic of names) {
      try {
        await this.admin.fetchTopicMetadata({ topics: [topic] });
      } catch (err) {
        if (authorizationFailure(err)) out.push(topic);
      }
    }
    return out;
  }

  /** Creates topics and waits for their leaders. Existing ones are left as they are. */
  async create(topics: NewTopic[]): Promise<void> {
    if (topics.length === 0) return;
    await this.admin.createTopics({
      // kafkajs' own wait gives up on UNKNOWN_TOPIC_OR_PARTITION while metadata propagates
      waitForLeaders: false,
      topics: topics.map((t) => ({
        topic: t.name,
        numPartitions: t.partitions,
        replicationFactor: t.replicationFactor,
        configEntries: Object.entries(t.configs).map(([name, value]) => ({ name, value })),
      })),
    });
    await this.waitForLeaders(topics.map((t) => t.name));
  }

  /** Polls metadata until every partition of `names` has a leader (30 s at most). */
  async waitForLeaders(names: string[], timeoutMs = 30_000): Promise<void> {
    const notYet = new Error(`topics ${names.join(', ')} have no leaders after ${timeoutMs} ms`);
    await retry(
      async () => {
        try {
          const meta = await this.admin.fetchTopicMetadata({ topics: names });
          if (meta.topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
        } catch (err) {
          // a new topic's partitions can answer UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE or
          // NOT_LEADER_FOR_PARTITION for a moment while the controller's metadata reaches the broker
          const e = err as { type?: string; retriable?: boolean };
          if (e.type !== 'UNKNOWN_TOPIC_OR_PARTITION' && e.type !== 'LEADER_NOT_AVAILABLE' && e.retriable !== true) throw err;
        }
        throw notYet;
      },
      // 50, 100, 200 ... 1000 ms
      { initialMs: 50, maxMs: 1000, jitter: 'none', deadlineMs: timeoutMs, retryIf: (err) => err === notYet },
    );
  }

  /** Grows topics to `count` partitions each (Kafka cannot shrink them). */
  async addPartitions(grow: { name: string; count: number }[]): Promise<void> {
    if (grow.length === 0) return;
    await this.admin.createPartitions({ topicPartitions: grow.map((g) => ({ topic: g.name, count: g.count })) });
  }

  /**
   * Replaces the topic's config overrides with `configs`: kafkajs speaks only the non-incremental
   * AlterConfigs, so pass every override the topic should keep (see `describe`).
   */
  async setConfigs(name: string, configs: Record<string, string>): Promise<void> {
    await this.admin.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: ConfigResourceTypes.TOPIC,
          name,
          configEntries: Object.entries(configs).map(([n, value]) => ({ name: n, value })),
        },
      ],
    });
  }

  /** Deletes topics that exist among `names`. */
  async delete(names: string[]): Promise<void> {
    const existing = new Set(await this.admin.listTopics());
    const present = names.filter((n) => existing.has(n));
    if (present.length > 0) await this.admin.deleteTopics({ topics: present, timeout: 30_000 });
  }
}
