/**
 * The Kafka security objects: each principal's Secret (SASL), the brokers' CA, and what KEDA's
 * kafka scaler connects with (its own principal's Secret and the TriggerAuthentication every
 * ScaledObject trigger references).
 *
 * KEDA's kafka scaler takes its connection settings from the TriggerAuthentication
 * (`secretTargetRef`, which reads Secrets only): `tls` (`enable`), `sasl` (`plaintext`,
 * `scram_sha256`, `scram_sha512`) and `username` from the rendered Secret `sonicflow-keda-kafka`,
 * `password` from `sonicflow-keda-kafka-password` (made by the operator, never rendered, like every
 * principal's) and `ca` (PEM) from the CA Secret the pods mount. `tls` and `sasl` are never also
 * written in the triggers' metadata: KEDA refuses a setting given in both places.
 */
import { KEDA_PARTY, principalUser } from '../../runtime/acls.js';
import type { Topology } from '../../runtime/topology.js';
import {
  KAFKA_CA_KEY,
  KAFKA_CA_SECRET,
  KEDA_TRIGGER_AUTH,
  kafkaPasswordSecretName,
  kafkaSecretName,
  metadata,
  type KafkaSaslMechanism,
  type RenderK8sOptions,
  type Resolved,
} from './common.js';
import type { Secret, TriggerAuthentication } from './objects.js';

/** KEDA's names for the SASL mechanisms (its `sasl` parameter). */
const KEDA_SASL: Record<KafkaSaslMechanism, string> = { plain: 'plaintext', 'scram-sha-256': 'scram_sha256', 'scram-sha-512': 'scram_sha512' };

/** The Secret of one principal (a stage, `api` or `keda`): its SASL user name; the password is in a Secret the operator makes. */
export function kafkaSecret(topology: Topology, component: string, opts: RenderK8sOptions, r: Resolved, extra: Record<string, string> = {}): Secret {
  const meta = metadata(kafkaSecretName(component), component, r, topology);
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      ...meta,
      annotations: {
        'sonicflow.io/kafka-principal': `User:${principalUser(topology, component, opts.principalPrefix)}`,
        'sonicflow.io/password-secret': `${kafkaPasswordSecretName(component)} (key password): made once by the operator, never rendered`,
      },
    },
    type: 'Opaque',
    stringData: { username: principalUser(topology, component, opts.principalPrefix), ...extra },
  };
}

/** The brokers' CA (SONIC_KAFKA_SSL_CA_FILE's content), for the pods' mount and KEDA's `ca`. */
export function kafkaCaSecret(topology: Topology, r: Resolved): Secret[] {
  if (r.kafka.caPem === undefined) return [];
  return [
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: metadata(KAFKA_CA_SECRET, 'config', r, topology),
      type: 'Opaque',
      stringData: { [KAFKA_CA_KEY]: r.kafka.caPem },
    },
  ];
}

/**
 * What KEDA connects with on a secured cluster (TLS or SASL; nothing on a plaintext one): the
 * Secret `sonicflow-keda-kafka` with its settings (`tls`, and with SASL its mechanism and user
 * name, its principal's as `topology acls` derives it) and the TriggerAuthentication that reads
 * them, the password Secret and the CA.
 */
export function kedaKafkaObjects(topology: Topology, opts: RenderK8sOptions, r: Resolved): [Secret, TriggerAuthentication] | [] {
  const { ssl, sasl, caPem } = r.kafka;
  if (!ssl && !sasl) return [];
  const settings: Record<string, string> = {
    ...(sasl ? { sasl: KEDA_SASL[sasl] } : {}),
    ...(ssl ? { tls: 'enable' } : {}),
  };
  const secret: Secret = sasl
    ? kafkaSecret(topology, KEDA_PARTY, opts, r, settings)
    : { apiVersion: 'v1', kind: 'Secret', metadata: metadata(kafkaSecretName(KEDA_PARTY), KEDA_PARTY, r, topology), type: 'Opaque', stringData: settings };
  const ref = (parameter: string, name: string, key = parameter): { parameter: string; name: string; key: string } => ({ parameter, name, key });
  const auth: TriggerAuthentication = {
    apiVersion: 'keda.sh/v1alpha1',
    kind: 'TriggerAuthentication',
    metadata: metadata(KEDA_TRIGGER_AUTH, KEDA_PARTY, r, topology),
    spec: {
      secretTargetRef: [
        ...(ssl ? [ref('tls', secret.metadata.name)] : []),
        ...(caPem !== undefined ? [ref('ca', KAFKA_CA_SECRET, KAFKA_CA_KEY)] : []),
        ...(sasl ? [ref('sasl', secret.metadata.name), ref('username', secret.metadata.name), ref('password', kafkaPasswordSecretName(KEDA_PARTY))] : []),
      ],
    },
  };
  return [secret, auth];
}
