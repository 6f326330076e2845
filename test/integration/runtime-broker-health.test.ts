import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { adoptKafkajs } from '../../src/kafka/handle.js';
import { Kafka, logLevel } from '../../src/kafka/kafkajs.js';
import { BrokerHealth } from '../../src/kafka/health.js';
import { onCleanup } from '../helpers/infra.js';
import { startPrivateBroker } from '../helpers/private-broker.js';

/** How long each of `n` checks took to answer, and what they answered. */
async function timedChecks(health: BrokerHealth, n: number, gapMs: number): Promise<{ answers: boolean[]; slowestMs: number }> {
  const answers: boolean[] = [];
  let slowestMs = 0;
  for (let i = 0; i < n; i++) {
    const t0 = Date.now();
    answers.push(await health.check());
    slowestMs = Math.max(slowestMs, Date.now() - t0);
    await new Promise((r) => setTimeout(r, gapMs)); // checks spread over time (the cache expires between them): the pacing under test
  }
  return { answers, slowestMs };
}

async function until(health: BrokerHealth, want: boolean, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if ((await health.check()) === want) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 200)); // poll interval
  }
  throw new Error(`BrokerHealth did not answer ${want} within ${timeoutMs} ms (status ${JSON.stringify(health.status)})`);
}

describe('BrokerHealth: readiness without a connection per call (private broker)', () => {
  it('200 checks share one connection; it answers false quickly while the broker is stopped or frozen, and true once it is back', async () => {
    const broker = await startPrivateBroker();
    // every TCP connection kafkajs opens goes through this factory
    let sockets = 0;
    const kafka = new Kafka({
      clientId: 'health-test',
      brokers: [broker.brokers],
      logLevel: logLevel.NOTHING,
      connectionTimeout: 1000,
      socketFactory: ({ host, port, onConnect }) => {
        sockets += 1;
        const socket = connect({ host, port }, onConnect);
        socket.setKeepAlive(true, 60_000);
        return socket;
      },
    });
    const timeoutMs = 1500;
    const health = new BrokerHealth(adoptKafkajs(kafka), { cacheMs: 1000, timeoutMs });
    onCleanup(() => health.close());

    // 200 concurrent checks: one connection, one answer
    const answers = await Promise.all(Array.from({ length: 200 }, () => health.check()));
    expect(answers.every(Boolean)).toBe(true);
    expect(sockets).toBe(1);
    // 200 more over about three seconds: the cache expires a few times, the connection stays
    const spread = await timedChecks(health, 200, 15);
    expect(spread.answers.every(Boolean)).toBe(true);
    expect(sockets).toBe(1);

    broker.stop();
    await until(health, false, 1000 + timeoutMs + 500);
    const down = await timedChecks(health, 10, 300);
    expect(down.answers).toEqual(Array(10).fill(false));
    expect(down.slowestMs).toBeLessThanOrEqual(timeoutMs + 500);
    broker.start();
    const backAfter = await until(health, true, 30_000);
    console.log(`BrokerHealth: true again ${backAfter} ms after the broker's start returned`);

    const before = sockets;
    broker.freeze();
    try {
      // the open connection stays up and nothing answers: false once the cached answer is older
      // than its second, and the timeout has passed; from then on at once
      await until(health, false, 1000 + timeoutMs + 500);
      const frozen = await timedChecks(health, 10, 300);
      expect(frozen.answers).toEqual(Array(10).fill(false));
      expect(frozen.slowestMs).toBeLessThanOrEqual(timeoutMs + 500);
      // 200 concurrent checks while frozen: still the one request under way, no new connection
      const concurrent = await Promise.all(Array.from({ length: 200 }, () => health.check()));
      expect(concurrent.every((a) => a === false)).toBe(true);
      expect(sockets).toBe(before);
    } finally {
      broker.thaw();
    }
    const thawedAfter = await until(health, true, 35_000);
    console.log(`BrokerHealth: true again ${thawedAfter} ms after the thaw`);
  }, 150_000);
});
