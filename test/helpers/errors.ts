/** What a synchronous call threw, as a SonicError (fails the test when it threw nothing). */
import type { SonicError } from '../../src/core/errors.js';

export function thrown(fn: () => unknown): SonicError {
  try {
    fn();
  } catch (err) {
    return err as SonicError;
  }
  throw new Error('expected a throw');
}
