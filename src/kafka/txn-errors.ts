/**
 * Which topic a transaction was refused: kafkajs 2.2.4 parses an AddPartitionsToTxn answer by
 * throwing the error of its first failed partition, without the topic. When the authorizer
 * refuses one topic, the broker answers TOPIC_AUTHORIZATION_FAILED for that topic's partitions
 * and OPERATION_NOT_ATTEMPTED for all the others, in no set order, so kafkajs threw either, and
 * an OPERATION_NOT_ATTEMPTED says nothing of the cause. This patch throws the cause (the first
 * error other than OPERATION_NOT_ATTEMPTED) with the topics it names in `topics`.
 *
 * kafkajs is pinned to 2.2.4 (package.json): the patched modules are its internals.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

const OPERATION_NOT_ATTEMPTED = 55;

interface AddPartitionsAnswer {
  errors: { topic: string; partitionErrors: { partition: number; errorCode: number }[] }[];
}

type ResponseModule = { parse: (data: AddPartitionsAnswer) => Promise<AddPartitionsAnswer> };

let installed = false;

/** Installs the parse of AddPartitionsToTxn answers into kafkajs (once per process). */
export function installTxnErrorTopics(): void {
  if (installed) return;
  const { createErrorFromCode } = require('kafkajs/src/protocol/error.js') as { createErrorFromCode: (code: number) => Error };
  const parse = async (data: AddPartitionsAnswer): Promise<AddPartitionsAnswer> => {
    const failed = data.errors.flatMap(({ topic, partitionErrors }) =>
      partitionErrors.filter((p) => p.errorCode !== 0).map((p) => ({ topic, code: p.errorCode })),
    );
    if (failed.length === 0) return data;
    const cause = failed.find((f) => f.code !== OPERATION_NOT_ATTEMPTED) ?? failed[0]!;
    throw Object.assign(createErrorFromCode(cause.code), { topics: [...new Set(failed.filter((f) => f.code === cause.code).map((f) => f.topic))] });
  };
  for (const version of ['v0', 'v1']) {
    const mod = require(`kafkajs/src/protocol/requests/addPartitionsToTxn/${version}/response.js`) as ResponseModule;
    if (typeof mod.parse !== 'function')
      throw new Error(`kafkajs internals changed: addPartitionsToTxn/${version}/response.parse is missing (kafkajs 2.2.4 expected)`);
    mod.parse = parse;
  }
  installed = true;
}
