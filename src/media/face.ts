/**
 * Face detection on the CPU: MediaPipe's BlazeFace detector and its 468-point FaceMesh, as
 * packaged (weights included) by @vladmandic/human, run on TensorFlow.js's WebAssembly backend,
 * which installs from the npm registry alone (no native library is downloaded at install).
 *
 * The model is loaded once per process ({@link FaceDetector.shared}) and checked on a drawn
 * portrait before its first use; one detection runs at a time (the WebAssembly backend is
 * single-threaded and Human keeps per-call state). Human keeps its models in module variables, so
 * a model that misbehaves cannot be reloaded in the process: after an unexpected fault it is
 * checked again, and a second fault stops the stage ({@link FaceDetector.detect}). Pictures are decoded upright, scaled so their
 * long side is at most {@link DETECT_MAX_SIDE} and padded to a square, so that the detector sees
 * faces with their true proportions; every coordinate returned is in pixels of the upright
 * source picture.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { SonicError } from '../core/errors.js';
import { decodeRgb } from './decode.js';
import type { FaceLandmarks, Point, Rect, RgbImage } from './geometry.js';
import { drawPortrait } from './portrait.js';

export type { FaceLandmarks, Point, Rect } from './geometry.js';

/** One detected face. */
export interface DetectedFace {
  /** The tight box around the mesh: forehead to chin, cheek to cheek. */
  box: Rect;
  /** The detector's confidence, 0..1. */
  score: number;
  landmarks: FaceLandmarks;
}

/** What {@link FaceDetector.detect} found in one picture. */
export interface FaceScan {
  /** Upright size of the picture. */
  width: number;
  height: number;
  /** Faces, largest box first. */
  faces: DetectedFace[];
  /** Time spent in the model (decode excluded), ms. */
  detectMs: number;
}

/** Long side of the picture the detector reads, px: BlazeFace sees 256 px anyway; the mesh gains little above this. */
export const DETECT_MAX_SIDE = 1024;
/** Least detector and mesh confidence of a face (Sonic's YOLOv5-face uses 0.5 too). */
export const MIN_FACE_SCORE = 0.5;
/** At most this many faces are reported. */
const MAX_FACES = 10;

// MediaPipe FaceMesh indices (canonical face model)
const FACE_OVAL = [
  10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
  54, 103, 67, 109,
];
const LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146];
const LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95];
/** The subject's right eye appears on the left of the picture. */
const EYE_LEFT_AS_SEEN = [33, 133, 159, 145];
const EYE_RIGHT_AS_SEEN = [263, 362, 386, 374];
const NOSE_TIP = 1;
const CHIN = 152;

/** The part of Human's API used here (the package's own types pull in all of TensorFlow.js). */
interface HumanLike {
  load(): Promise<void>;
  detect(input: unknown): Promise<{ face: { mesh: number[][]; boxScore: number; faceScore: number; score: number }[]; error?: string | null }>;
  tf: { tensor4d(values: Int32Array, shape: [number, number, number, number], dtype: 'int32'): { dispose(): void }; getBackend(): string };
  models: { loaded(): string[] };
}

let shared: Promise<FaceDetector> | undefined;
const routed = new Set<string>();

/**
 * What the detector has been through: `ok`; `suspect` after an unexpected fault (the next detection
 * runs the check portrait first); `rechecked` once it passed that check; `broken` after a failed
 * re-check or a second fault: every detection then throws MODEL_UNAVAILABLE.
 */
type Health = 'ok' | 'suspect' | 'rechecked' | 'broken';

/** The face detector of this process: its model, loaded once. */
export class FaceDetector {
  private queue: Promise<unknown> = Promise.resolve();
  private health: Health = 'ok';
  private brokenBy: SonicError | undefined;

  private constructor(private readonly human: HumanLike) {}

  /**
   * The process's detector, loaded on first use and checked on a drawn portrait. A failed load is
   * not kept: the next call tries again.
   *
   * @throws SonicError `MODEL_UNAVAILABLE` when the model cannot be loaded or finds no face in
   *   the check picture (a deployment fault, not a task's).
   */
  static shared(): Promise<FaceDetector> {
    if (!shared) {
      const loading = FaceDetector.load().catch((err: unknown) => {
        // only this load's own failure is forgotten, never a later one's promise
        if (shared === loading) shared = undefined;
        throw err;
      });
      shared = loading;
    }
    return shared;
  }

  private static async load(): Promise<FaceDetector> {
    let human: HumanLike;
    try {
      human = await createHuman();
      await human.load();
    } catch (err) {
      throw new SonicError('MODEL_UNAVAILABLE', `the face detection model cannot be loaded: ${(err as Error).message}`, { cause: err });
    } finally {
      dropEmscriptenHandlers();
    }
    const missing = ['blazeface', 'facemesh'].filter((m) => !human.models.loaded().some((l) => l.toLowerCase().includes(m)));
    if (missing.length) throw new SonicError('MODEL_UNAVAILABLE', `the face detection model did not pass its check: ${missing.join(', ')} missing`);
    const detector = new FaceDetector(human);
    // the first run compiles the kernels; it is also a check that the whole chain finds a face
    await detector.check();
    return detector;
  }

  /**
   * Runs the model on a drawn portrait: it must find exactly one face.
   *
   * @throws SonicError `MODEL_UNAVAILABLE` when the model fails or finds another number of faces.
   */
  private async check(): Promise<void> {
    const portrait = drawPortrait(192, 240);
    let found: DetectedFace[];
    try {
      found = await this.infer(portrait, portrait.width, portrait.height, { x: 1, y: 1 });
    } catch (err) {
      throw new SonicError('MODEL_UNAVAILABLE', `the face detection model did not pass its check: ${(err as Error).message}`, { cause: err });
    }
    if (found.length !== 1) {
      throw new SonicError('MODEL_UNAVAILABLE', `the face detection model found ${found.length} faces in its check portrait instead of 1`);
    }
  }

  /**
   * Finds the faces in a picture file (any format ffmpeg decodes; EXIF orientation applied).
   * Detection itself cannot be interrupted: `signal` and `timeoutMs` bound the decode, and an
   * abort while waiting for the model rejects at once.
   *
   * One unexpected fault of the model is forgiven per process: it fails this detection with
   * `FACE_DETECTION_FAILED`, and the next detection first runs the model on the check portrait.
   * A failed re-check, or any later fault, means the model (whose weights and WebAssembly memory
   * live as long as the process) cannot be trusted: that detection and every later one throw
   * `MODEL_UNAVAILABLE`, which stops the stage; restarting the process is the reload.
   *
   * @throws SonicError `IMAGE_DECODE_FAILED` when the picture cannot be decoded;
   *   `FACE_DETECTION_FAILED` on the first unexpected fault of the model; `MODEL_UNAVAILABLE` as
   *   above; `signal.reason` on abort.
   */
  async detect(image: string, options: { signal?: AbortSignal; timeoutMs?: number; maxPixels?: number } = {}): Promise<FaceScan> {
    const fit = (w: number, h: number): { width: number; height: number } => {
      const k = Math.min(1, DETECT_MAX_SIDE / Math.max(w, h));
      return { width: Math.max(1, Math.round(w * k)), height: Math.max(1, Math.round(h * k)) };
    };
    const square = (w: number, h: number): { width: number; height: number } => ({ width: Math.max(w, h), height: Math.max(w, h) });
    const pic = await decodeRgb(image, { ...options, fit, pad: square });
    // per axis: rounding each side to whole pixels scales them by slightly different factors
    const scaled = fit(pic.sourceWidth, pic.sourceHeight);
    const scale = { x: pic.sourceWidth / scaled.width, y: pic.sourceHeight / scaled.height };
    options.signal?.throwIfAborted();
    const started = performance.now();
    const faces = await this.detectPixels(pic, pic.sourceWidth, pic.sourceHeight, scale, options.signal);
    return { width: pic.sourceWidth, height: pic.sourceHeight, faces, detectMs: performance.now() - started };
  }

  /** One detection in the queue: the re-check a fault asked for, then the model, its faults counted. */
  private detectPixels(pic: RgbImage, width: number, height: number, scale: Scale, signal?: AbortSignal): Promise<DetectedFace[]> {
    const run = async (): Promise<DetectedFace[]> => {
      signal?.throwIfAborted();
      if (this.health === 'broken') throw this.unavailable();
      if (this.health === 'suspect') {
        try {
          await this.check();
        } catch (err) {
          this.health = 'broken';
          this.brokenBy = err as SonicError;
          throw err;
        }
        this.health = 'rechecked';
      }
      try {
        return await this.infer(pic, width, height, scale);
      } catch (err) {
        const reason = (err as Error).message;
        if (this.health === 'rechecked') {
          this.health = 'broken';
          this.brokenBy = new SonicError('MODEL_UNAVAILABLE', `the face detection model failed again after passing its re-check: ${reason}`, {
            cause: err,
          });
          throw this.brokenBy;
        }
        // this task is retried once; the detector is checked again before it serves anyone
        this.health = 'suspect';
        throw new SonicError('FACE_DETECTION_FAILED', `face detection failed: ${reason}`, { cause: err });
      }
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    if (!signal) return result;
    // the signal lives as long as the partition: its listener must not outlive this detection
    return new Promise<DetectedFace[]>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      result.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** Runs the model on RGB pixels; coordinates are multiplied by `scale` and clamped to `width` × `height`. */
  private async infer(pic: RgbImage, width: number, height: number, scale: Scale): Promise<DetectedFace[]> {
    // allocating the input is the model's work too: the WebAssembly heap may be what failed
    const tensor = this.human.tf.tensor4d(Int32Array.from(pic.rgb), [1, pic.height, pic.width, 3], 'int32');
    try {
      const res = await this.human.detect(tensor);
      if (res.error) throw new Error(String(res.error));
      return res.face
        .filter((f) => f.mesh.length >= 468 && f.boxScore >= MIN_FACE_SCORE && f.faceScore >= MIN_FACE_SCORE)
        .map((f) => toFace(f.mesh, Math.min(f.boxScore, f.faceScore), scale, width, height))
        .sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height);
    } finally {
      tensor.dispose();
    }
  }

  private unavailable(): SonicError {
    const why = this.brokenBy?.message ?? 'it failed';
    return new SonicError('MODEL_UNAVAILABLE', `the face detection model is unusable until the process restarts (${why})`, { cause: this.brokenBy });
  }
}

/** Source pixels per detector pixel, per axis. */
interface Scale {
  x: number;
  y: number;
}

function toFace(mesh: number[][], score: number, scale: Scale, width: number, height: number): DetectedFace {
  const pt = (i: number): Point => {
    const p = mesh[i] ?? [0, 0];
    return { x: clamp((p[0] ?? 0) * scale.x, 0, width), y: clamp((p[1] ?? 0) * scale.y, 0, height) };
  };
  const mean = (ids: number[]): Point => {
    const ps = ids.map(pt);
    return { x: ps.reduce((s, p) => s + p.x, 0) / ps.length, y: ps.reduce((s, p) => s + p.y, 0) / ps.length };
  };
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < 468; i++) {
    const p = pt(i);
    x0 = Math.min(x0, p.x);
    y0 = Math.min(y0, p.y);
    x1 = Math.max(x1, p.x);
    y1 = Math.max(y1, p.y);
  }
  return {
    box: { x: x0, y: y0, width: x1 - x0, height: y1 - y0 },
    score: Math.round(score * 1000) / 1000,
    landmarks: {
      face_oval: FACE_OVAL.map(pt),
      lips_outer: LIPS_OUTER.map(pt),
      lips_inner: LIPS_INNER.map(pt),
      left_eye: mean(EYE_LEFT_AS_SEEN),
      right_eye: mean(EYE_RIGHT_AS_SEEN),
      nose_tip: pt(NOSE_TIP),
      chin: pt(CHIN),
    },
  };
}

/** Human on the WebAssembly backend, its models and the .wasm binaries read from the installed packages. */
async function createHuman(): Promise<HumanLike> {
  const require = createRequire(import.meta.url);
  // the package's exports map has no entry for its WebAssembly build; its main file sits beside it
  const humanDist = dirname(require.resolve('@vladmandic/human'));
  const wasmDist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
  const tf = require('@tensorflow/tfjs-core') as typeof import('@tensorflow/tfjs-core');
  const modelsDir = join(humanDist, '..', 'models');
  const modelBase = `file://${modelsDir}/`;
  registerModelFiles(tf, modelBase, modelsDir);
  const { Human } = require(join(humanDist, 'human.node-wasm.js')) as { Human: new (config: object) => HumanLike };
  const off = { enabled: false };
  return new Human({
    backend: 'wasm',
    wasmPath: `${wasmDist}/`,
    modelBasePath: modelBase,
    debug: false,
    warmup: 'none',
    // every picture is new: no results carried over from the previous one
    cacheSensitivity: 0,
    cacheModels: false,
    filter: off,
    gesture: off,
    body: off,
    hand: off,
    object: off,
    segmentation: off,
    face: {
      enabled: true,
      detector: { rotation: false, maxDetected: MAX_FACES, minConfidence: MIN_FACE_SCORE, skipFrames: 0, skipTime: 0, return: false },
      mesh: { enabled: true, keepInvalid: false },
      iris: off,
      attention: off,
      emotion: off,
      description: off,
      antispoof: off,
      liveness: off,
      gear: off,
    },
  });
}

/**
 * Serves the model files under `base` (a file:// URL) from the package's directory through a
 * TensorFlow.js load router: Human would fetch them, and Node's fetch does not read files.
 */
function registerModelFiles(tf: typeof import('@tensorflow/tfjs-core'), base: string, dir: string): void {
  // once per process: two routers answering one URL make TensorFlow.js refuse to load it
  if (routed.has(base)) return;
  routed.add(base);
  tf.io.registerLoadRouter((url) => {
    if (typeof url !== 'string' || !url.startsWith(base)) return null as never;
    const file = join(dir, decodeURIComponent(url.slice(base.length)));
    return {
      load: async () => {
        const json = JSON.parse(await readFile(file, 'utf8')) as import('@tensorflow/tfjs-core').io.ModelJSON;
        return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
          const specs = manifest.flatMap((g) => g.weights);
          const parts = await Promise.all(manifest.flatMap((g) => g.paths).map((p) => readFile(join(dirname(file), p))));
          const all = Buffer.concat(parts);
          return [specs, all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
        });
      },
    };
  });
}

/**
 * The WebAssembly module (Emscripten) installs process-wide handlers that rethrow every uncaught
 * exception and unhandled rejection; they would take the process's error handling (logging, a
 * clean stop) from its owner. They are removed once the backend has started.
 */
function dropEmscriptenHandlers(): void {
  const emscripten = (listener: unknown): boolean => {
    const text = String(listener);
    return text.includes('ExitStatus') || /^function \(reason\) \{ throw reason; \}$/.test(text);
  };
  for (const l of process.listeners('uncaughtException')) if (emscripten(l)) process.removeListener('uncaughtException', l);
  for (const l of process.listeners('unhandledRejection')) if (emscripten(l)) process.removeListener('unhandledRejection', l);
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
