#!/usr/bin/env node
// Entry point of the `sonicflow` CLI: loads the TypeScript sources through tsx (no build step).
// Started by a Node older than package.json's engines.node (a system Node 20, say), it runs itself
// again under the project's Node 24 from node_modules (bin/node-runtime.mjs), or refuses.
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureNodeRuntime } from './node-runtime.mjs';

if (ensureNodeRuntime(dirname(dirname(fileURLToPath(import.meta.url))))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
