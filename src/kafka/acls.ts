/**
 * ACL administration (Kafka's `kafka-acls`): the bindings of some principals, create and delete
 * bindings, and which of a client's topics the broker hides from it. Bindings are plain data
 * here; the kafkajs enums stay inside this file.
 */
import type { Admin, AclEntry, AclFilter } from 'kafkajs';
import { AclOperationTypes, AclPermissionTypes, AclResourceTypes, ResourcePatternTypes } from './kafkajs.js';
import { SonicError } from '../core/errors.js';
import { AdminConnection, type KafkaClient } from './handle.js';

export type AclResourceType = 'TOPIC' | 'GROUP' | 'CLUSTER' | 'TRANSACTIONAL_ID';
export type AclPatternType = 'LITERAL' | 'PREFIXED';
export type AclOperation = 'READ' | 'WRITE' | 'DESCRIBE' | 'DELETE' | 'CREATE' | 'ALTER' | 'DESCRIBE_CONFIGS' | 'ALTER_CONFIGS' | 'IDEMPOTENT_WRITE';

/** One ALLOW binding from any host: `principal` may `operation` on the resource. */
export interface AclBinding {
  /** `User:<name>`. */
  principal: string;
  resourceType: AclResourceType;
  /** The resource's name, or its start when `pattern` is PREFIXED; `kafka-cluster` for the cluster. */
  name: string;
  pattern: AclPatternType;
  operation: AclOperation;
}

/** A stable identity of a binding, for comparing sets of them. */
export function aclKey(b: AclBinding): string {
  return `${b.principal}|${b.resourceType}|${b.pattern}|${b.name}|${b.operation}`;
}

/** The kafkajs error types of a request the broker's authorizer refused. */
export const AUTHORIZATION_ERRORS: ReadonlySet<string> = new Set([
  'TOPIC_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
]);

/**
 * The authorization failure inside a kafkajs error (kafkajs wraps the broker's answer in retry,
 * aggregate and non-retriable errors), or undefined when there is none.
 */
export function authorizationFailure(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 5) return undefined;
  const e = err as { type?: unknown; cause?: unknown; originalError?: unknown; errors?: unknown };
  if (typeof e.type === 'string' && AUTHORIZATION_ERRORS.has(e.type)) return e.type;
  for (const inner of [e.cause, e.originalError, ...(Array.isArray(e.errors) ? (e.errors as unknown[]) : [])]) {
    const found = authorizationFailure(inner, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** The topics an authorization failure names, when the error carries them (see txn-errors.ts). */
export function refusedTopics(err: unknown, depth = 0): string[] | undefined {
  if (!err || typeof err !== 'object' || depth > 5) return undefined;
  const e = err as { topics?: unknown; cause?: unknown; originalError?: unknown; errors?: unknown };
  if (Array.isArray(e.topics) && e.topics.every((t) => typeof t === 'string')) return e.topics as string[];
  for (const inner of [e.cause, e.originalError, ...(Array.isArray(e.errors) ? (e.errors as unknown[]) : [])]) {
    const found = refusedTopics(inner, depth + 1);
    if (found) return found;
  }
  return undefined;
}

const ANY_HOST = '*';

function toEntry(b: AclBinding): AclEntry {
  return {
    principal: b.principal,
    host: ANY_HOST,
    resourceType: AclResourceTypes[b.resourceType],
    resourceName: b.name,
    resourcePatternType: ResourcePatternTypes[b.pattern],
    operation: AclOperationTypes[b.operation],
    permissionType: AclPermissionTypes.ALLOW,
  };
}

const nameOf = <T extends Record<string, string | number>>(e: T, value: number): string | undefined =>
  Object.entries(e).find(([k, v]) => v === value && Number.isNaN(Number(k)))?.[0];

export class AclAdmin {
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

  /**
   * Every binding of `principal` (any resource, pattern and operation). ALLOW bindings from any
   * host only; others (DENY, host-bound) are listed in `other`, never touched by sonicflow.
   */
  async describe(principal: string): Promise<{ bindings: AclBinding[]; other: number }> {
    const filter: AclFilter = {
      resourceType: AclResourceTypes.ANY,
      resourcePatternType: ResourcePatternTypes.ANY,
      principal,
      operation: AclOperationTypes.ANY,
      permissionType: AclPermissionTypes.ANY,
    };
    const { resources } = await this.admin.describeAcls(filter);
    const bindings: AclBinding[] = [];
    let other = 0;
    for (const r of resources) {
      const resourceType = nameOf(AclResourceTypes, r.resourceType) as AclResourceType | undefined;
      const pattern = nameOf(ResourcePatternTypes, r.resourcePatternType) as AclPatternType | undefined;
      for (const a of r.acls) {
        const operation = nameOf(AclOperationTypes, a.operation) as AclOperation | undefined;
        if (!resourceType || !pattern || !operation || a.permissionType !== AclPermissionTypes.ALLOW || a.host !== ANY_HOST) other += 1;
        else bindings.push({ principal: a.principal, resourceType, name: r.resourceName, pattern, operation });
      }
    }
    return { bindings, other };
  }

  /**
   * Creates bindings (creating one that exists changes nothing), then waits until the broker
   * enforces them: the controller commits ACLs at once, the brokers' authorizers apply them from
   * the metadata log a moment later (seconds for a few hundred bindings), and a client started
   * in between is refused.
   */
  async create(bindings: AclBinding[], timeoutMs = 60_000): Promise<void> {
    if (bindings.length === 0) return;
    for (let i = 0; i < bindings.length; i += 100) await this.admin.createAcls({ acl: bindings.slice(i, i + 100).map(toEntry) });
    await this.until(bindings, true, timeoutMs);
  }

  /** Deletes exactly these bindings (each filter matches one binding), then waits until the broker no longer lists them. */
  async delete(bindings: AclBinding[], timeoutMs = 60_000): Promise<void> {
    if (bindings.length === 0) return;
    for (let i = 0; i < bindings.length; i += 100) await this.admin.deleteAcls({ filters: bindings.slice(i, i + 100).map(toEntry) });
    await this.until(bindings, false, timeoutMs);
  }

  /** Polls the bindings of their principals until every one of `bindings` is listed (`present`) or none is. */
  private async until(bindings: AclBinding[], present: boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const principals = [...new Set(bindings.map((b) => b.principal))];
    for (;;) {
      const listed = new Set<string>();
      for (const p of principals) for (const b of (await this.describe(p)).bindings) listed.add(aclKey(b));
      const pending = bindings.filter((b) => listed.has(aclKey(b)) !== present);
      if (pending.length === 0) return;
      if (Date.now() > deadline) {
        throw new SonicError(
          'BROKER_UNAVAILABLE',
          `the broker still ${present ? 'lacks' : 'lists'} ${pending.length} ACL binding(s) ${timeoutMs} ms after they were ${present ? 'created' : 'deleted'}, e.g. ${aclKey(pending[0]!)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250)); // poll until the authorizer has applied them
    }
  }
}
