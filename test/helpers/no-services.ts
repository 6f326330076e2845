/**
 * Setup of the unit tier (vitest.config.ts): the unit tests need no broker, registry or S3 store.
 * Their settings already point nowhere (127.0.0.1:1), which catches code that reads them; this
 * guard also catches code that falls back to a default address (a `new Context({})` reaches
 * localhost:9092) or goes out to the network. Every TCP connection a unit test opens in this
 * process is checked: loopback only, and never to a port of the local stack (its defaults, and
 * whatever the environment named before the tier replaced it). A refused connection fails with
 * ECONNREFUSED at once and fails the test, even one that expected a connection error.
 * Child processes get the settings that point nowhere.
 */
import { Socket } from 'node:net';
import { afterEach } from 'vitest';
import { loadConfig } from '../../src/core/config.js';

interface Guard {
  refused: string[];
}
const KEY = Symbol.for('sonicflow.unit.no-services');
const state = globalThis as unknown as Record<symbol, Guard | undefined>;

/** host:port of each broker or URL in `list` (comma-separated). */
function endpoints(list: string): { host: string; port: number }[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .flatMap((s) => {
      try {
        const u = new URL(s.includes('://') ? s : `tcp://${s}`);
        const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
        return [{ host: u.hostname.replace(/^\[|\]$/g, ''), port }];
      } catch {
        return [];
      }
    });
}

const defaults = loadConfig({});
const stackPorts = new Set<number>(
  [...defaults.kafkaBrokers, defaults.schemaRegistryUrl, defaults.s3Endpoint, process.env.SONICFLOW_UNIT_REFUSED ?? '']
    .flatMap((s) => endpoints(s))
    .map((e) => e.port),
);

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1|::ffff:127(\.\d{1,3}){3})$/i;

/** Why a connection to host:port is refused, or undefined when it may go. */
function refusal(host: string, port: number): string | undefined {
  if (!LOOPBACK.test(host)) return `${host}:${port} (not loopback)`;
  if (stackPorts.has(port)) return `${host}:${port} (a port of the local stack)`;
  return undefined;
}

/** The host and port a `socket.connect(...)` call aims at (undefined for a Unix socket). */
function target(args: unknown[]): { host: string; port: number } | undefined {
  // net.connect() hands over its normalised arguments as an array: [options, callback]
  const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
  if (first !== null && typeof first === 'object') {
    const o = first as { host?: string; port?: number | string; path?: string };
    if (o.path !== undefined) return undefined;
    return { host: o.host ?? 'localhost', port: Number(o.port) };
  }
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    return { host: typeof args[1] === 'string' ? args[1] : 'localhost', port: Number(first) };
  }
  return undefined;
}

if (!state[KEY]) {
  const guard: Guard = { refused: [] };
  state[KEY] = guard;
  const connect = Socket.prototype.connect;
  Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
    const t = target(args);
    const why = t && refusal(t.host, t.port);
    if (!why) return (connect as (...a: unknown[]) => Socket).apply(this, args);
    guard.refused.push(why);
    const err = Object.assign(new Error(`connect ECONNREFUSED ${t.host}:${t.port}: the unit tier reaches no broker, registry, store or network (${why})`), {
      code: 'ECONNREFUSED',
    });
    process.nextTick(() => this.destroy(err));
    return this;
  } as typeof connect;
}

/** The connections refused since the last call (and forgets them). */
export function takeRefused(): string[] {
  return state[KEY]!.refused.splice(0);
}

afterEach(() => {
  const refused = takeRefused();
  if (refused.length > 0) {
    throw new Error(`this unit test tried to connect to ${[...new Set(refused)].join(', ')}: make it pure, or move it to test/integration`);
  }
});
