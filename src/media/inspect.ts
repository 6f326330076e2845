/** Interim: header inspection of uploads (sniffed type only). */
import { open } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { sniff } from './sniff.js';

export async function inspectMedia(kind: 'audio' | 'image', path: string, _limits: { maxPixels: number; maxSide: number; minShort: number; maxShort: number }): Promise<{ format: string; contentType: string; width?: number; height?: number }> {
  const f = await open(path, 'r');
  const buf = Buffer.alloc(64);
  const { bytesRead } = await f.read(buf, 0, 64, 0).finally(() => f.close());
  const found = sniff(buf.subarray(0, bytesRead));
  if (found?.kind !== kind) {
    throw new SonicError(kind === 'audio' ? 'UNSUPPORTED_AUDIO_FORMAT' : 'UNSUPPORTED_IMAGE_FORMAT', `the ${kind} file is not an accepted format`, { safe: true, details: { field: kind } });
  }
  return { format: found.format, contentType: found.contentType };
}
