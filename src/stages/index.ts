/**
 * The Sonic stages by name. Each stage is one file; `sonicflow run <stage>` looks its handler up
 * here (a topology file given with --file brings its own `stages` export instead).
 */
import type { StageDefinition } from '../runtime/stage.js';

export const sonicStages: Record<string, StageDefinition<never>> = {};
