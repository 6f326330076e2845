/**
 * The record types of the Sonic topics. They are generated from `schemas/*.avsc` (the source of
 * truth) into records.gen.ts by `npm run gen:types`, so stage code compiles against the schemas
 * themselves: a schema change that breaks a stage fails `tsc`. Timestamps are Date (logical type
 * timestamp-millis).
 */
export type {
  AudioProbe,
  Callback,
  ErrorInfo,
  FaceLandmarks,
  FaceRegion,
  ImageProbe,
  MediaRef,
  Outcome,
  Point,
  Rect,
  Schemas,
  SonicParams,
  TaskCompleted,
  TaskEncoded,
  TaskKey,
  TaskPrepared,
  TaskRendered,
  TaskRequest,
  TaskState,
  TaskStatus,
  TaskValidated,
} from './records.gen.js';
