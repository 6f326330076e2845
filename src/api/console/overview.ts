/**
 * The console's overview and topology (under /v1/console, operators only): a snapshot of every
 * stage (src/app/overview.ts: backlog, rates, handler time, in flight, retries, dead letters,
 * replicas and what the autoscaler's rule wants) with the tasks of the last hour by state, live
 * over server-sent events; and the topology's graph (the nodes `sonicflow topology describe`
 * prints). One sampler serves every viewer of this API process.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { firstValueFrom, map, timeout, type Observable } from 'rxjs';
import { SonicError } from '../../core/errors.js';
import { shareOverview, type Overview } from '../../app/overview.js';
import type { StatusView } from '../../app/status-view.js';
import type { TopologyGraph } from '../../runtime/describe.js';
import type { EventStreams } from '../events.js';
import { requireOperator } from './access.js';

export interface ConsoleOverviewDeps {
  /** The shared snapshots (src/app/overview.ts `shareOverview`). */
  overview$: Observable<Overview>;
  graph: TopologyGraph;
  view: StatusView;
  streams: EventStreams;
}

/** A snapshot with the tasks created in the last hour by their state now. */
export type OverviewView = Overview & { tasksLastHour: { counts: Record<string, number>; complete: boolean } };

export function consoleOverviewRoutes(deps: ConsoleOverviewDeps): FastifyPluginAsync {
  const withTasks = (o: Overview): OverviewView => ({ ...o, tasksLastHour: deps.view.countByState(new Date(Date.now() - 3_600_000)) });
  // the tasks are counted once per sample, before the sharing, however many viewers there are
  const views$ = shareOverview(deps.overview$.pipe(map(withTasks)));
  const latest = (): Promise<OverviewView> =>
    firstValueFrom(views$.pipe(timeout({ first: 15_000 }))).catch((err: unknown) => {
      throw new SonicError('BROKER_UNAVAILABLE', 'the overview could not be sampled (broker unreachable?)', { safe: true, cause: err });
    });
  return async (app: FastifyInstance) => {
    app.get('/console/overview', { schema: { hide: true } }, async (req) => {
      requireOperator(req);
      return latest();
    });

    app.get('/console/topology', { schema: { hide: true } }, async (req) => {
      requireOperator(req);
      return deps.graph;
    });

    app.get('/console/overview/events', { schema: { hide: true } }, async (req, reply) => {
      requireOperator(req);
      const first = await latest();
      const owner = req.keyId ?? req.ip;
      deps.streams.admit(owner);
      reply.hijack();
      // the latest snapshot is replayed to a new subscriber: the stream goes on from the next one
      let seen = first.at;
      deps.streams.serve<OverviewView>(reply.raw, owner, first, views$, {
        matches: (o) => (o.at === seen ? false : ((seen = o.at), true)),
        isLast: () => false,
        render: (o) => JSON.stringify(o),
      });
    });
  };
}
