/**
 * The API's server secret (keys the idempotent task ids): SONIC_API_SECRET when set, otherwise a
 * random one generated on first start into the state directory (file mode 0600) and read back on
 * every later start. Replicas of one deployment must share it: set SONIC_API_SECRET, or share the
 * state directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SonicError } from '../core/errors.js';
import { retry } from '../core/retry.js';

/** The file under the state directory that holds a generated secret. */
export const SECRET_FILE = 'api-secret';

/**
 * The secret as bytes. A configured secret must have at least 32 characters; a generated one is
 * 32 random bytes, hex-encoded in the file.
 *
 * @throws SonicError CONFIG_INVALID for a short configured secret or an unreadable/corrupt file.
 */
export async function loadServerSecret(configured: string, stateDir: string): Promise<Buffer> {
  if (configured !== '') {
    if (configured.length < 32) throw new SonicError('CONFIG_INVALID', 'SONIC_API_SECRET must have at least 32 characters');
    return Buffer.from(configured, 'utf8');
  }
  const path = join(stateDir, SECRET_FILE);
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  try {
    // 'wx': of two processes starting at once, one writes and the other reads what it wrote
    await writeFile(path, `${randomBytes(32).toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
      throw new SonicError('CONFIG_INVALID', `cannot write the API secret to ${path}: ${(err as Error).message}`, { cause: err });
  }
  // the other process may still be writing it
  return retry(
    async () => {
      const text = (await readFile(path, 'utf8')).trim();
      if (!/^[0-9a-f]{64}$/.test(text))
        throw new SonicError('CONFIG_INVALID', `${path} does not hold a 64-character hex secret; delete it to generate a new one, or set SONIC_API_SECRET`);
      return Buffer.from(text, 'hex');
    },
    { maxAttempts: 20, initialMs: 50, maxMs: 50, jitter: 'none' },
  );
}
