/**
 * Least-privilege ACLs derived from the topology: one Kafka principal per stage, one for the API
 * (the topics' `external` party `api`) and one for operators' tools (`dlq`, `lag`, `gc`), each
 * allowed exactly what its code does on the broker. `sonicflow topology acls` prints them and
 * `topology deploy --acls` applies them (src/ops/acls.ts); docs/operations.md lists them.
 *
 * What each request needs (Kafka's authorizer; READ, WRITE, DELETE and ALTER imply DESCRIBE):
 * Fetch and TxnOffsetCommit READ the topic; JoinGroup, OffsetFetch and AddOffsetsToTxn READ the
 * group; Produce and AddPartitionsToTxn WRITE the topic and the transactional id;
 * FindCoordinator DESCRIBEs the group or transactional id; ListOffsets and Metadata DESCRIBE the
 * topic; DeleteGroups DELETEs the group; DescribeGroups DESCRIBEs it. An idempotent producer
 * without a transactional id needs no IDEMPOTENT_WRITE on the cluster since Kafka 2.8 (WRITE on
 * a topic is enough), so no principal gets a cluster binding.
 */
import { authorizationFailure, refusedTopics, type AclBinding, type AclOperation, type AclPatternType, type AclResourceType } from '../kafka/acls.js';
import { TopicAdmin } from '../kafka/admin.js';
import type { KafkaClient } from '../kafka/client.js';
import { SonicError } from '../core/errors.js';
import { apiViewGroupPrefix, gcViewGroupPrefix, groupId, readerGroupPrefix, transactionalId } from './names.js';
import { findStage, type StageSpec, type Topology } from './topology.js';

export type { AclBinding } from '../kafka/acls.js';

/** Who a principal is for. */
export type PrincipalRole = 'stage' | 'api' | 'ops' | 'keda';

export interface PrincipalAcls {
  role: PrincipalRole;
  /** The stage's name, `api` or `ops`. */
  name: string;
  /** `User:<prefix>-<name>`. */
  principal: string;
  /** The SASL user name (the principal without `User:`). */
  username: string;
  bindings: AclBinding[];
}

export interface AclOptions {
  /** SONIC_CLIENT_ID: group ids and transactional ids start with it. */
  clientId: string;
  /** Principals are `User:<principalPrefix>-<name>`; default: the topology's prefix. */
  principalPrefix?: string;
}

/** The SASL user name of a stage, `api` or `ops` under `prefix` (default: the topology's prefix). */
export function principalUser(topology: Topology, name: string, prefix?: string): string {
  return `${prefix ?? topology.prefix}-${name}`;
}

/** The party that the topic declarations name as the API (`external.producers/consumers`). */
export const API_PARTY = 'api';

class Grants {
  private readonly seen = new Set<string>();
  readonly bindings: AclBinding[] = [];
  constructor(private readonly principal: string) {}

  add(resourceType: AclResourceType, name: string, pattern: AclPatternType, ...operations: AclOperation[]): this {
    for (const operation of operations) {
      const key = `${resourceType}|${pattern}|${name}|${operation}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      this.bindings.push({ principal: this.principal, resourceType, name, pattern, operation });
    }
    return this;
  }

  topic(name: string, ...operations: AclOperation[]): this {
    return this.add('TOPIC', name, 'LITERAL', ...operations);
  }
}

const unique = (xs: string[]): string[] => [...new Set(xs)];

/** A stage's principal: its input and retry tiers, group, sinks, status, DLQ, changelogs and transactional ids. */
export function stageAcls(topology: Topology, stage: StageSpec, o: AclOptions): PrincipalAcls {
  const username = principalUser(topology, stage.name, o.principalPrefix);
  const principal = `User:${username}`;
  const g = new Grants(principal);
  g.topic(stage.input, 'READ', 'DESCRIBE');
  // a failed record goes to the next tier, which the stage also reads
  for (const t of stage.retry.topics) g.topic(t, 'READ', 'WRITE', 'DESCRIBE');
  g.add('GROUP', groupId(o.clientId, topology, stage), 'LITERAL', 'READ');
  const writes = [...Object.values(stage.outputs), ...(stage.emitsStatus ? [topology.statusTopic] : []), stage.dlq];
  for (const t of unique(writes)) g.topic(t, 'WRITE', 'DESCRIBE');
  for (const s of stage.stores) g.topic(s.changelog, 'READ', 'WRITE', 'DESCRIBE');
  // a dispatcher reads what it dispatched and its workers have not done (taking over), and their
  // group: its committed offsets (OffsetFetch) and who holds which partition (DescribeGroups)
  if (stage.dispatch) {
    for (const t of Object.values(stage.outputs)) g.topic(t, 'READ');
    g.add('GROUP', groupId(o.clientId, topology, stage.dispatch.workers), 'LITERAL', 'DESCRIBE');
  }
  // one transactional id per consumed partition: `<clientId>.<stage>.<topic>.<partition>`; the
  // prefix stops at the topic, so `dlq replay`'s `<clientId>.<prefix>.<stage>.dlq-replay` is not the stage's
  for (const t of [stage.input, ...stage.retry.topics]) {
    const start = transactionalId(o.clientId, { kind: 'partition', stage, topic: t, partition: 0 }).replace(/0$/, '');
    g.add('TRANSACTIONAL_ID', start, 'PREFIXED', 'WRITE', 'DESCRIBE');
  }
  return { role: 'stage', name: stage.name, principal, username, bindings: g.bindings };
}

/** Topics whose declaration names `party` as an outside producer (`write`) or consumer (`read`). */
function externalTopics(topology: Topology, party: string, side: 'producers' | 'consumers'): string[] {
  return Object.values(topology.topics)
    .filter((t) => t.external?.[side]?.includes(party))
    .map((t) => t.name);
}

/**
 * The API's principal: WRITE on the topics it produces (submit transactions, the janitor's
 * tombstones), READ on those it follows with private groups (PREFIXED; never committed nor
 * deleted, so no DELETE), DESCRIBE for end-offset lookups, and its transactional ids (PREFIXED).
 */
export function apiAcls(topology: Topology, o: AclOptions): PrincipalAcls {
  const username = principalUser(topology, API_PARTY, o.principalPrefix);
  const principal = `User:${username}`;
  const g = new Grants(principal);
  for (const t of externalTopics(topology, API_PARTY, 'producers')) g.topic(t, 'WRITE', 'DESCRIBE');
  for (const t of externalTopics(topology, API_PARTY, 'consumers')) g.topic(t, 'READ', 'DESCRIBE');
  g.add('GROUP', `${apiViewGroupPrefix(o.clientId, topology)}.`, 'PREFIXED', 'READ');
  const start = transactionalId(o.clientId, { kind: 'api', topology, instance: 'x' }).replace(/x$/, '');
  g.add('TRANSACTIONAL_ID', start, 'PREFIXED', 'WRITE', 'DESCRIBE');
  return { role: 'api', name: API_PARTY, principal, username, bindings: g.bindings };
}

/**
 * The operators' principal, for `sonicflow dlq`, `lag` and `gc`: READ the DLQs (throw-away
 * reader groups, PREFIXED), WRITE the stages' inputs for a replay under the replay's transactional
 * ids; every group and id carries the client id and the topology's prefix, so one deployment's
 * operators cannot use another's; DESCRIBE the stages' groups and consumed topics for lag; for gc, READ the topics the API
 * follows (its status view's, with gc's own groups, PREFIXED) and WRITE tombstones to those it also
 * writes (the status topic and the idempotency keys).
 * `topology deploy` itself is not this principal's: it creates topics and ACLs, an administrator's
 * job (a super user, see docs/operations.md).
 */
export function opsAcls(topology: Topology, o: AclOptions): PrincipalAcls {
  const username = principalUser(topology, 'ops', o.principalPrefix);
  const principal = `User:${username}`;
  const g = new Grants(principal);
  g.add('GROUP', `${readerGroupPrefix(o.clientId, topology)}.`, 'PREFIXED', 'READ');
  for (const s of topology.stages) {
    g.topic(s.dlq, 'READ', 'DESCRIBE');
    g.topic(s.input, 'WRITE', 'DESCRIBE');
    for (const t of s.retry.topics) g.topic(t, 'DESCRIBE');
    g.add('GROUP', groupId(o.clientId, topology, s), 'LITERAL', 'DESCRIBE');
    g.add('TRANSACTIONAL_ID', transactionalId(o.clientId, { kind: 'dlq-replay', topology, stage: s }), 'LITERAL', 'WRITE', 'DESCRIBE');
  }
  g.topic(topology.statusTopic, 'READ', 'WRITE', 'DESCRIBE');
  // gc follows what the API follows, through the API's status view with groups of its own
  const apiReads = new Set(externalTopics(topology, API_PARTY, 'consumers'));
  for (const t of apiReads) g.topic(t, 'READ', 'DESCRIBE');
  g.add('GROUP', `${gcViewGroupPrefix(o.clientId, topology)}.`, 'PREFIXED', 'READ');
  for (const t of externalTopics(topology, API_PARTY, 'producers')) if (apiReads.has(t)) g.topic(t, 'WRITE', 'DESCRIBE');
  return { role: 'ops', name: 'ops', principal, username, bindings: g.bindings };
}

/** The party KEDA's kafka scaler connects as (`render k8s`: its TriggerAuthentication). */
export const KEDA_PARTY = 'keda';

/**
 * KEDA's principal, for the kafka triggers of the rendered ScaledObjects: the scaler reads each
 * stage's committed offsets (OffsetFetch, after FindCoordinator: DESCRIBE the group) and its
 * consumed topics' partitions and end offsets (Metadata, ListOffsets: DESCRIBE the topic). It
 * joins no group and reads no record, so DESCRIBE is all it gets.
 */
export function kedaAcls(topology: Topology, o: AclOptions): PrincipalAcls {
  const username = principalUser(topology, KEDA_PARTY, o.principalPrefix);
  const principal = `User:${username}`;
  const g = new Grants(principal);
  for (const s of topology.stages) {
    for (const t of [s.input, ...s.retry.topics]) g.topic(t, 'DESCRIBE');
    g.add('GROUP', groupId(o.clientId, topology, s), 'LITERAL', 'DESCRIBE');
  }
  return { role: 'keda', name: KEDA_PARTY, principal, username, bindings: g.bindings };
}

/**
 * Every principal of the topology with its bindings: the stages in order, then the API (when a
 * topic names it), the operators and KEDA. `stage` keeps only that stage's principal.
 */
export function deriveAcls(topology: Topology, o: AclOptions & { stage?: string }): PrincipalAcls[] {
  if (o.stage !== undefined) {
    const s = findStage(topology, o.stage);
    if (!s) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${o.stage}" (stages: ${topology.stages.map((x) => x.name).join(', ')})`);
    return [stageAcls(topology, s, o)];
  }
  const hasApi = Object.values(topology.topics).some((t) => t.external?.producers?.includes(API_PARTY) || t.external?.consumers?.includes(API_PARTY));
  return [...topology.stages.map((s) => stageAcls(topology, s, o)), ...(hasApi ? [apiAcls(topology, o)] : []), opsAcls(topology, o), kedaAcls(topology, o)];
}

/** What was refused: the resource kind, by the broker's error type. */
const REFUSED: Record<string, { kind: string; action: string }> = {
  TOPIC_AUTHORIZATION_FAILED: { kind: 'topic', action: 'use' },
  GROUP_AUTHORIZATION_FAILED: { kind: 'consumer group', action: 'use' },
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: { kind: 'transactional id', action: 'use' },
  CLUSTER_AUTHORIZATION_FAILED: { kind: 'cluster', action: 'act on' },
};

/**
 * The configuration error for a request the broker's authorizer refused (`type`, a kafkajs
 * error type): names who (`stage`, `principal`), what (`resources`, the candidates when the
 * broker did not say which) and how to fix it. Never retryable: the record is not at fault.
 */
export function notAuthorized(o: {
  type: string;
  stage: string;
  principal?: string;
  resources: string[];
  /** Every one of `resources` was refused (not only candidates). */
  certain?: boolean;
  action?: string;
  cause?: unknown;
}): SonicError {
  const r = REFUSED[o.type] ?? { kind: 'resource', action: 'use' };
  const who = `stage ${o.stage} (principal ${o.principal ?? 'of this connection, no SASL user configured'})`;
  const what =
    o.resources.length === 0
      ? `the ${r.kind}`
      : o.resources.length === 1
        ? `${r.kind} ${o.resources[0]}`
        : `${o.certain ? '' : 'one of the '}${r.kind}s ${o.resources.join(', ')}`;
  return new SonicError(
    'KAFKA_NOT_AUTHORIZED',
    `${who} is not authorized to ${o.action ?? r.action} ${what} (the broker answered ${o.type}): grant the ACLs derived from the topology (sonicflow topology deploy --acls) or run the stage with its own principal`,
    {
      cause: o.cause,
      details: {
        type: o.type,
        stage: o.stage,
        ...(o.principal ? { principal: o.principal } : {}),
        resources: o.resources,
        certain: o.certain ?? o.resources.length === 1,
      },
    },
  );
}

/** What a refused request was about, for {@link explainRefusal}. */
export interface RefusalContext {
  stage: string;
  principal?: string;
  /** The stage's consumer group (GROUP_AUTHORIZATION_FAILED). */
  group: string;
  /** The transactional id in use (TRANSACTIONAL_ID_AUTHORIZATION_FAILED). */
  transactionalId?: string;
  /** The topics the request may have been refused (TOPIC_AUTHORIZATION_FAILED). */
  topics: string[];
  /** What was done to the topics: `read`, `write to`. */
  action?: string;
}

/**
 * KAFKA_NOT_AUTHORIZED for `err` when it is a refusal by the broker's authorizer, naming the
 * refused resource; undefined for any other error. For a topic: the topics the error names (a
 * transaction's AddPartitionsToTxn, see src/kafka/txn-errors.ts), else those among `where.topics`
 * the broker hides from this principal, else all of them as candidates.
 */
export async function explainRefusal(kafka: KafkaClient, err: unknown, where: RefusalContext): Promise<SonicError | undefined> {
  const type = authorizationFailure(err);
  if (!type) return undefined;
  let resources: string[] = [];
  let certain = true;
  if (type === 'GROUP_AUTHORIZATION_FAILED') resources = [where.group];
  else if (type === 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED') resources = where.transactionalId ? [where.transactionalId] : [];
  else if (type === 'TOPIC_AUTHORIZATION_FAILED') {
    resources = refusedTopics(err) ?? (await hiddenTopics(kafka, where.topics));
    if (resources.length === 0) [resources, certain] = [where.topics, where.topics.length === 1];
  }
  return notAuthorized({
    type,
    stage: where.stage,
    ...(where.principal ? { principal: where.principal } : {}),
    resources,
    certain,
    ...(type === 'TOPIC_AUTHORIZATION_FAILED' && where.action ? { action: where.action } : {}),
    cause: err,
  });
}

/** Those of `topics` the broker hides from this principal; none when that cannot be told. */
async function hiddenTopics(kafka: KafkaClient, topics: string[]): Promise<string[]> {
  if (topics.length <= 1) return [];
  const admin = new TopicAdmin(kafka);
  try {
    await admin.connect();
    return await admin.denied(topics);
  } catch {
    return [];
  } finally {
    await admin.close().catch(() => undefined);
  }
}
