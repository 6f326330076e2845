/**
 * Where a task's deliverable lives: its store key and the URL clients download it from. The
 * publish stage writes there and the API serves and links it, so both take it from here.
 */
import { publicApiUrl, type Config } from '../core/config.js';

/** Store key prefix of everything a task's stages wrote (inputs of multipart submits included): `tasks/<id>/`. */
export function taskBlobPrefix(taskId: string): string {
  return `tasks/${taskId}/`;
}

/** The folder of every tenant's upload area (`uploads/<tenant>/`, filled by POST /v1/uploads). */
export const UPLOADS_ROOT = 'uploads/';

/** Store key of a task's published video. */
export function publishedKey(taskId: string): string {
  return `videos/${taskId}.mp4`;
}

/** Where clients download a task's video. */
export function videoUrl(config: Pick<Config, 'publicBaseUrl' | 'apiPublicUrl' | 'apiPort'>, taskId: string): string {
  return config.publicBaseUrl ? `${config.publicBaseUrl}/${publishedKey(taskId)}` : `${publicApiUrl(config)}/v1/tasks/${taskId}/video`;
}

/** The compacted topic of idempotent requests (key and body fingerprint per task id), written by the API. */
export function idempotencyKeysTopic(prefix: string): string {
  return `${prefix}.tasks.keys`;
}
