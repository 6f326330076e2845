// Types of bin/node-runtime.mjs, for the tests.
export declare const REEXEC_ENV: string;

export declare function satisfies(version: string, range: string): boolean;

export type RuntimeDecision = { action: 'run' } | { action: 'reexec'; node: string } | { action: 'refuse'; message: string };

export declare function decideRuntime(o: { current: string; required: string; localNode: string | null; reexecuted?: boolean; root?: string }): RuntimeDecision;

export declare function localNodeBinary(root: string): string | null;

export declare function ensureNodeRuntime(root: string): boolean;
