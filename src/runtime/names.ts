/**
 * The names sonicflow gives its consumer groups and transactional ids, in one place. Running
 * deployments depend on every byte of them: KEDA's triggers and the lag exporter watch a stage's
 * group, offsets are committed under it, and a transactional id fences the previous owner only
 * if the new one uses the same id. Renaming is a migration, never a refactoring
 * (test/unit/names.test.ts pins the formats).
 *
 * `clientId` is SONIC_CLIENT_ID; `topology` is a topology or anything with its `prefix`
 * (SONIC_TOPIC_PREFIX); `stage` is a stage or its name.
 */

type Prefixed = string | { readonly prefix: string };
type Named = string | { readonly name: string };

const prefixOf = (t: Prefixed): string => (typeof t === 'string' ? t : t.prefix);
const nameOf = (s: Named): string => (typeof s === 'string' ? s : s.name);

/**
 * The consumer group of a stage, `<clientId>.<prefix>.<stage>`: every replica of the stage
 * joins it, its input offsets are committed under it, KEDA scales the stage on its lag.
 */
export function groupId(clientId: string, topology: Prefixed, stage: Named): string {
  return `${clientId}.${prefixOf(topology)}.${nameOf(stage)}`;
}

/**
 * The start of the API's status-view groups, `<clientId>.<prefix>.api-view`. Each API process
 * follows the status topic with a private, never-committing group of its own under it
 * (`<start>.<pid>.<time>`, see `TopicTail`).
 */
export function apiViewGroupPrefix(clientId: string, topology: Prefixed): string {
  return `${clientId}.${prefixOf(topology)}.api-view`;
}

/**
 * The start of `sonicflow gc`'s status-view groups, `<clientId>.<prefix>.gc-view`: gc reads the
 * status topic through the API's view with private, never-committing groups of its own, apart
 * from a running API's (`<start>.<pid>.<time>`, see `TopicTail`). The groups hold no offsets (the
 * view's store does), so the prefix is the same for every run, with or without a kept store.
 */
export function gcViewGroupPrefix(clientId: string, topology: Prefixed): string {
  return `${clientId}.${prefixOf(topology)}.gc-view`;
}

/**
 * The start of the throw-away groups with which an operator's tool reads a topic once
 * (`sonicflow dlq list|show|replay` reading a DLQ), `<clientId>.<prefix>.reader`: each read
 * joins a private, never-committing group `<start>.<pid>.<time>.<random>` (see `readTopic`).
 * Scoped like a stage's group, so one deployment's operators cannot use another's.
 */
export function readerGroupPrefix(clientId: string, topology: Prefixed): string {
  return `${clientId}.${prefixOf(topology)}.reader`;
}

/** Which transactional producer an id is for. */
export type TransactionalIdOf =
  /**
   * A stage's producer for one input partition, `<clientId>.<stage>.<topic>.<partition>` (the
   * topic carries the prefix): whichever replica is assigned the partition takes the id and so
   * fences the previous owner.
   */
  | { kind: 'partition'; stage: Named; topic: string; partition: number }
  /**
   * A stage process's one producer on a KIP-447 client, `<clientId>.<stage>.<topic>.stage-<instance>`
   * (the topic: the stage's input, so the stage's transactional-id ACL covers it). `instance` is
   * the host name and a slot that a restarted process on the same host takes over from its dead
   * predecessor (fencing its open transaction at once) and that two live processes never share;
   * characters other than letters, digits, `.`, `_` and `-` become `_`.
   */
  | { kind: 'stage'; stage: Named; topic: string; instance: string }
  /**
   * One of an API replica's producers, `<clientId>.<prefix>.api.<instance>`, then `.<lane>` when
   * the replica has more than one (SONIC_API_PRODUCERS): a restarted replica fences its
   * predecessor's open transactions. Characters other than letters, digits, `.`, `_` and `-` in
   * `instance` (SONIC_API_INSTANCE_ID, else the host name) become `_`.
   */
  | { kind: 'api'; topology: Prefixed; instance: string; lane?: number }
  /**
   * `sonicflow dlq replay` of a stage, `<clientId>.<prefix>.<stage>.dlq-replay`: one replay of a
   * stage at a time, and none of another deployment's (the prefix scopes it like the stage's group).
   */
  | { kind: 'dlq-replay'; topology: Prefixed; stage: Named };

/** The transactional id of a producer (see {@link TransactionalIdOf} for each form). */
export function transactionalId(clientId: string, of: TransactionalIdOf): string {
  switch (of.kind) {
    case 'partition':
      return `${clientId}.${nameOf(of.stage)}.${of.topic}.${of.partition}`;
    case 'stage':
      return `${clientId}.${nameOf(of.stage)}.${of.topic}.stage-${of.instance.replace(/[^A-Za-z0-9._-]/g, '_')}`;
    case 'api': {
      const base = `${clientId}.${prefixOf(of.topology)}.api.${of.instance.replace(/[^A-Za-z0-9._-]/g, '_')}`;
      return of.lane === undefined ? base : `${base}.${of.lane}`;
    }
    case 'dlq-replay':
      return `${clientId}.${prefixOf(of.topology)}.${nameOf(of.stage)}.dlq-replay`;
  }
}

/**
 * Names no stage may take (topology validation refuses them), because a name made from a stage's
 * would then be another's: the principals `<prefix>-api`, `<prefix>-ops` and `<prefix>-keda` (a
 * stage's is `<prefix>-<stage>`, and so are its Kubernetes Secret `sonicflow-<stage>-kafka` and its
 * pods' component label), and the groups and ids under `<clientId>.<prefix>.` that are not a
 * stage's: the API's and gc's view groups, the operators' reader groups, the replay ids.
 */
export const RESERVED_STAGE_NAMES: readonly string[] = ['api', 'ops', 'keda', 'api-view', 'gc-view', 'reader', 'dlq-replay'];
