/**
 * The Sonic topics as stage code sees them: each topic's key (without the prefix) and its
 * schema, typed with the record type generated from that schema. A stage's input and sinks are
 * these references, so a handler can emit only the type its sink's schema describes; the
 * topology (topologies/sonic.ts) declares the topics themselves, and `sonicflow run` refuses a
 * topology whose topic has another schema than the reference.
 */
import type { Schemas } from '../domain/records.js';
import { topicRefs } from '../runtime/stage.js';

const topic = topicRefs<Schemas>();

export const TOPICS = {
  requested: topic('tasks.requested', 'task-request'),
  validated: topic('tasks.validated', 'task-validated'),
  prepared: topic('tasks.prepared', 'task-prepared'),
  dispatched: topic('tasks.dispatched', 'task-prepared'),
  rendered: topic('tasks.rendered', 'task-rendered'),
  encoded: topic('tasks.encoded', 'task-encoded'),
  completed: topic('tasks.completed', 'task-completed'),
  status: topic('tasks.status', 'task-status'),
};
