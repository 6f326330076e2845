/**
 * The Sonic stages by name. Each stage is one file; `sonicflow run <stage>` looks its handler up
 * here (a topology file given with --file brings its own `stages` export instead).
 */
import type { StageDefinition } from '../runtime/stage.js';
import type { StageDeps } from './common.js';
import { encodeStage } from './encode.js';
import { inferStage } from './infer.js';
import { notifyStage } from './notify.js';
import { preprocessStage } from './preprocess.js';
import { publishStage } from './publish.js';
import { validateStage } from './validate.js';

export type { StageDeps } from './common.js';

/** Builds the stage handlers; only the requested ones, so that e.g. an API process loads no backend. */
export function sonicStages(deps: StageDeps, only?: string[]): Record<string, StageDefinition<never>> {
  const all: Record<string, () => StageDefinition<never>> = {
    validate: () => validateStage(deps) as StageDefinition<never>,
    preprocess: () => preprocessStage(deps) as StageDefinition<never>,
    infer: () => inferStage(deps) as StageDefinition<never>,
    encode: () => encodeStage(deps) as StageDefinition<never>,
    publish: () => publishStage(deps) as StageDefinition<never>,
    notify: () => notifyStage(deps) as StageDefinition<never>,
  };
  return Object.fromEntries(Object.entries(all).filter(([name]) => !only || only.includes(name)).map(([name, make]) => [name, make()]));
}
