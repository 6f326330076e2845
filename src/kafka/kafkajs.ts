/**
 * kafkajs, as every module of ours takes it: `send-messages.ts` must replace kafkajs's produce
 * path before kafkajs's producer loads, so its import comes first and every value of kafkajs is
 * imported from here (types may come from 'kafkajs' itself).
 */
import './send-messages.js';
import kafkajs from 'kafkajs';

export const {
  Kafka,
  logLevel,
  Partitioners,
  AssignerProtocol,
  PartitionAssigners,
  ConfigResourceTypes,
  AclResourceTypes,
  AclOperationTypes,
  AclPermissionTypes,
  ResourcePatternTypes,
} = kafkajs;
