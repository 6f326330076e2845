/**
 * TypeScript shapes of the Avro records (schemas/*.avsc are the source of truth; these mirror
 * them for stage code). Timestamps are Date (logical type timestamp-millis).
 */
import type { SonicParams } from './params.js';

export interface MediaRef {
  uri: string;
  content_type: string | null;
  size_bytes: number | null;
  sha256: string | null;
}

export interface TaskRequest {
  schema_version: number;
  task_id: string;
  tenant_id: string;
  idempotency_key: string | null;
  created_at: Date;
  expires_at: Date | null;
  image: MediaRef;
  audio: MediaRef;
  max_duration_s: number;
  truncate_audio: boolean;
  params: SonicParams;
  callback: { url: string; secret_ref: string | null } | null;
  priority: number;
  metadata: Record<string, string>;
  traceparent: string | null;
}

interface StageRecordBase {
  task_id: string;
  request: TaskRequest;
}

export interface TaskValidated extends StageRecordBase {
  audio_probe: { format: string; codec: string; duration_s: number; sample_rate: number; channels: number };
  image_probe: { format: string; width: number; height: number };
  validated_at: Date;
}

export interface TaskPrepared extends StageRecordBase {
  audio_16k: MediaRef;
  /**
   * The speech as infer and encode use it: the upload decoded and cut at the task's limit
   * (16-bit FLAC, `tasks/<id>/preprocess/speech.flac`). Records written before the cut existed
   * carry the upload itself.
   */
  audio_original: MediaRef;
  image_png: MediaRef;
  /** Duration of `audio_original`, s, as probed after the cut (not as the upload's header claims). */
  audio_duration_s: number;
  width: number;
  height: number;
  prepared_at: Date;
}

export interface TaskRendered extends StageRecordBase {
  video: MediaRef;
  /** The speech to mux (see {@link TaskPrepared.audio_original}): the video must last as long. */
  audio_original: MediaRef;
  audio_duration_s: number;
  backend: string;
  seed: number | null;
  frames: number;
  fps: number;
  infer_ms: number;
  rendered_at: Date;
}

export interface TaskEncoded extends StageRecordBase {
  video: MediaRef;
  duration_s: number;
  width: number;
  height: number;
  encoded_at: Date;
}

export interface TaskCompleted extends StageRecordBase {
  outcome: 'SUCCEEDED' | 'FAILED';
  video: MediaRef | null;
  video_url: string | null;
  duration_s: number | null;
  error: { code: string; message: string; retryable: boolean } | null;
  completed_at: Date;
}
