// Generated from schemas/*.avsc by `npm run gen:types`; do not edit.
// A unit test fails when this file and the schemas disagree.

/** A task reached its end. Value of <prefix>.tasks.completed; notify turns it into a webhook. */
export interface TaskCompleted {
  task_id: string;
  /** The task as submitted, carried forward so every stage has its parameters. */
  request: TaskRequest;
  outcome: Outcome;
  video: null | MediaRef;
  /** Public location of the MP4. */
  video_url: null | string;
  duration_s: null | number;
  error: null | ErrorInfo;
  completed_at: Date;
}

/** A submitted talking-head task: portrait + speech + parameters. Value of <prefix>.tasks.requested; key is task_id. */
export interface TaskRequest {
  schema_version: number;
  task_id: string;
  tenant_id: string;
  /** Client Idempotency-Key: [A-Za-z0-9_:.-]{1,255}. */
  idempotency_key: null | string;
  created_at: Date;
  expires_at: null | Date;
  image: MediaRef;
  audio: MediaRef;
  /** Longest accepted audio, s; hard cap 400 (Sonic's frame limit). */
  max_duration_s: number;
  /** Cut audio over max_duration_s instead of rejecting it. */
  truncate_audio: boolean;
  params: SonicParams;
  callback: null | Callback;
  /** 0 (normal) to 9. */
  priority: number;
  /** Client correlation data, at most 16 entries of 256 chars. */
  metadata: Record<string, string>;
  /** W3C trace context of the submit. */
  traceparent: null | string;
}

/** A blob in the store. Media never rides in Kafka: records carry references. */
export interface MediaRef {
  /** Store URI: file://..., s3://bucket/key or blob://<key>. */
  uri: string;
  /** MIME type sniffed from the bytes. */
  content_type: null | string;
  size_bytes: null | number;
  /** Lower-case hex digest of the bytes. */
  sha256: null | string;
}

/** Sonic generation parameters; ranges are enforced by the API and the validate stage. */
export interface SonicParams {
  /** Short side of the generated frames, px: 256-1024, multiple of 64. */
  min_resolution: number;
  /** Face crop expansion: 0.1-1.0. */
  expand_ratio: number;
  /** Diffusion steps: 1-100. */
  inference_steps: number;
  /** Motion intensity: 0.5-2.0. */
  dynamic_scale: number;
  /** Extra motion factor for backends that take it: 0.5-2.0. */
  motion_scale: number;
  /** 0 to 2^31-1; null lets the backend choose and record one. */
  seed: null | number;
  /** Output frame rate; Sonic produces 25. */
  fps: number;
  /** Crop the portrait around the detected face. */
  crop_to_face: boolean;
}

/** Where to deliver the Standard Webhooks event when the task ends. */
export interface Callback {
  /** https URL of the receiver. */
  url: string;
  /** Name of the signing secret in configuration; never the secret itself. */
  secret_ref: null | string;
}

export type Outcome = 'SUCCEEDED' | 'FAILED';

export interface ErrorInfo {
  code: string;
  message: string;
  retryable: boolean;
}

/** Output of encode: the deliverable MP4 (H.264 yuv420p + AAC, faststart). Value of <prefix>.tasks.encoded. */
export interface TaskEncoded {
  task_id: string;
  /** The task as submitted, carried forward so every stage has its parameters. */
  request: TaskRequest;
  video: MediaRef;
  duration_s: number;
  width: number;
  height: number;
  encoded_at: Date;
}

/** The first request of an idempotent task: which Idempotency-Key of which tenant made it and a fingerprint of its body, so that a retry with the same key and another body is refused (IDEMPOTENCY_KEY_REUSED). Value of the compacted <prefix>.tasks.keys, keyed by task_id; written by the API in the submit's transaction. */
export interface TaskKey {
  task_id: string;
  tenant_id: string;
  idempotency_key: string;
  /** Lowercase hex SHA-256 of the request's canonical form: parameters with defaults applied, limits, callback, priority, metadata and the SHA-256 of each medium. */
  fingerprint: string;
  created_at: Date;
}

/** Output of preprocess: model-ready media. Value of <prefix>.tasks.prepared. */
export interface TaskPrepared {
  task_id: string;
  /** The task as submitted, carried forward so every stage has its parameters. */
  request: TaskRequest;
  /** 16 kHz mono PCM WAV for the model. */
  audio_16k: MediaRef;
  /** The original audio, kept for muxing. */
  audio_original: MediaRef;
  /** Orientation-corrected, bounded RGB PNG. */
  image_png: MediaRef;
  audio_duration_s: number;
  width: number;
  height: number;
  prepared_at: Date;
  /** The face found by preprocess and its crop; null in records written before face detection. */
  face: null | FaceRegion;
  /** Landmarks of that face for the preview renderer; null in records written before face detection. */
  landmarks: null | FaceLandmarks;
}

/** The face preprocess found and the crop made around it. */
export interface FaceRegion {
  /** Tight box around the face's 468-point mesh (forehead to chin, cheek to cheek). */
  box: Rect;
  /** Detector confidence, 0-1. */
  score: number;
  /** Faces found in the picture; the largest is used. */
  faces: number;
  /** Sonic's square crop: the box grown by expand_ratio per side, clamped, squared; image_png is this crop resized to min_resolution. Null without crop_to_face. */
  crop: null | Rect;
  /** Width of the upright uploaded picture, px. */
  picture_width: number;
  /** Height of the upright uploaded picture, px. */
  picture_height: number;
  /** The model that found the face. */
  detector: string;
}

/** A rectangle in pixels of the upright uploaded picture (EXIF orientation applied). */
export interface Rect {
  /** Left edge, px. */
  x: number;
  /** Top edge, px. */
  y: number;
  width: number;
  height: number;
}

/** Face landmarks from the mesh, in pixels of the upright uploaded picture (map them into image_png through face.crop). */
export interface FaceLandmarks {
  /** 36 points around the face, clockwise from the top of the forehead. */
  face_oval: Point[];
  /** 20 points around the outer edge of the lips, from the left corner over the upper lip. */
  lips_outer: Point[];
  /** 20 points around the mouth opening, in the same order. */
  lips_inner: Point[];
  /** Centre of the eye on the left of the picture. */
  left_eye: Point;
  right_eye: Point;
  nose_tip: Point;
  chin: Point;
}

export interface Point {
  x: number;
  y: number;
}

/** Output of infer: a silent rendered video. Value of <prefix>.tasks.rendered. */
export interface TaskRendered {
  task_id: string;
  /** The task as submitted, carried forward so every stage has its parameters. */
  request: TaskRequest;
  /** Rendered frames as a video without audio. */
  video: MediaRef;
  audio_original: MediaRef;
  audio_duration_s: number;
  /** builtin, command, cog or worker. */
  backend: string;
  /** Seed actually used, when the backend reports one. */
  seed: null | number;
  frames: number;
  fps: number;
  /** Wall time of inference, ms. */
  infer_ms: number;
  rendered_at: Date;
}

/** A task's state change. Value of the compacted <prefix>.tasks.status; the latest per task_id is the task's state. */
export interface TaskStatus {
  task_id: string;
  state: TaskState;
  /** Stage that emitted the event; null for the API. */
  stage: null | string;
  /** 1 for the first try of the stage, +1 per retry. */
  attempt: number;
  /** 0.0-1.0 within the stage, when known. */
  progress: null | number;
  error_code: null | string;
  error_message: null | string;
  retryable: null | boolean;
  result_url: null | string;
  tenant_id: null | string;
  /** When the task was submitted. */
  created_at: null | Date;
  /** The face and crop preprocess chose (its events and the view after them). */
  face: null | FaceRegion;
  /** Set on the QUEUED event a DLQ replay writes: who replayed the task (the console key's id, or `cli`); never the key itself. Null otherwise. */
  replayed_by: null | string;
  /** When this state was entered. */
  at: Date;
}

export type TaskState = 'QUEUED' | 'VALIDATING' | 'PREPROCESSING' | 'INFERRING' | 'ENCODING' | 'PUBLISHING' | 'SUCCEEDED' | 'FAILED';

/** Output of validate: the inputs probed and accepted. Value of <prefix>.tasks.validated. */
export interface TaskValidated {
  task_id: string;
  /** The task as submitted, carried forward so every stage has its parameters. */
  request: TaskRequest;
  audio_probe: AudioProbe;
  image_probe: ImageProbe;
  validated_at: Date;
}

export interface AudioProbe {
  format: string;
  codec: string;
  duration_s: number;
  sample_rate: number;
  channels: number;
}

export interface ImageProbe {
  format: string;
  width: number;
  height: number;
}

/** Each schema of schemas/ by file base name, and the type of its values. */
export interface Schemas {
  'task-completed': TaskCompleted;
  'task-encoded': TaskEncoded;
  'task-key': TaskKey;
  'task-prepared': TaskPrepared;
  'task-rendered': TaskRendered;
  'task-request': TaskRequest;
  'task-status': TaskStatus;
  'task-validated': TaskValidated;
}
