/**
 * Face detection on real and drawn pictures, the face rules, and Sonic's crop.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { maxAttemptsFor } from '../../../src/core/errors.js';
import { DETECT_MAX_SIDE, FaceDetector, type FaceScan, type Rect } from '../../../src/media/face.js';
import { chooseFace, modelSize, sonicCrop } from '../../../src/media/face-crop.js';
import { toModelPng } from '../../../src/media/image.js';
import { makePortrait, type PortraitGeometry } from '../../../src/media/samples.js';
import { astronautPng, landscape, twoAstronauts } from '../../fixtures/media/photos.js';
import { expectSonicError, tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('face');
const f = (name: string): string => join(dir, name);

let detector: FaceDetector;
beforeAll(async () => {
  detector = await FaceDetector.shared();
}, 120_000);

const inside = (p: { x: number; y: number }, r: Rect): boolean => p.x >= r.x && p.x <= r.x + r.width && p.y >= r.y && p.y <= r.y + r.height;

describe('FaceDetector', () => {
  it('finds the one face of the astronaut photograph, its box around her face and its landmarks in place', async () => {
    const scan = await detector.detect(astronautPng());
    expect(scan).toMatchObject({ width: 512, height: 512 });
    expect(scan.faces).toHaveLength(1);
    const face = scan.faces[0]!;
    expect(face.score).toBeGreaterThanOrEqual(0.5);
    // her face (forehead to chin, cheek to cheek) lies at about x 178-271, y 70-174
    expect(face.box.x).toBeGreaterThan(160);
    expect(face.box.x).toBeLessThan(200);
    expect(face.box.y).toBeGreaterThan(50);
    expect(face.box.y).toBeLessThan(95);
    expect(face.box.width).toBeGreaterThan(75);
    expect(face.box.width).toBeLessThan(120);
    expect(face.box.height).toBeGreaterThan(85);
    expect(face.box.height).toBeLessThan(130);
    const l = face.landmarks;
    for (const p of [l.left_eye, l.right_eye, l.nose_tip, ...l.lips_outer]) expect(inside(p, face.box)).toBe(true);
    expect(l.left_eye.x).toBeLessThan(l.right_eye.x);
    expect(l.nose_tip.y).toBeGreaterThan(l.left_eye.y);
    expect(l.lips_inner[5]!.y).toBeGreaterThan(l.nose_tip.y);
    expect(l.chin.y).toBeGreaterThan(l.lips_outer[15]!.y);
    expect(l.face_oval).toHaveLength(36);
    expect(l.lips_outer).toHaveLength(20);
    expect(l.lips_inner).toHaveLength(20);
  });

  it('finds the face of a picture larger than DETECT_MAX_SIDE in source pixels: the astronaut at 2048 px gives her box ×4', async () => {
    const big = f('astronaut2048.png');
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', astronautPng(), '-vf', 'scale=2048:2048:flags=lanczos', '-frames:v', '1', big]);
    const [small, large] = [await detector.detect(astronautPng()), await detector.detect(big)];
    expect(2048).toBeGreaterThan(DETECT_MAX_SIDE);
    expect(large).toMatchObject({ width: 2048, height: 2048 });
    expect(large.faces).toHaveLength(1);
    const [a, b] = [small.faces[0]!.box, large.faces[0]!.box];
    // the detector reads the 2048 px picture at 1024 px, twice the 512 px one: not the same pixels, so 4 % of the face's size
    const tol = 0.04 * 4 * a.width;
    for (const k of ['x', 'y', 'width', 'height'] as const) expect(Math.abs(b[k] - 4 * a[k])).toBeLessThan(tol);
    expect(Math.abs(large.faces[0]!.landmarks.nose_tip.x - 4 * small.faces[0]!.landmarks.nose_tip.x)).toBeLessThan(tol);
    expect(Math.abs(large.faces[0]!.landmarks.nose_tip.y - 4 * small.faces[0]!.landmarks.nose_tip.y)).toBeLessThan(tol);
  });

  it('finds no face in a landscape, and the task rule says NO_FACE_DETECTED', async () => {
    const scan = await detector.detect(landscape(f('landscape.png')));
    expect(scan.faces).toEqual([]);
    await expectSonicError(
      Promise.resolve().then(() => chooseFace(scan, 512)),
      'NO_FACE_DETECTED',
    );
  });

  it('finds both astronauts side by side: two faces of one size are MULTIPLE_FACES', async () => {
    const scan = await detector.detect(twoAstronauts(f('two.png')));
    expect(scan).toMatchObject({ width: 1024, height: 512 });
    expect(scan.faces).toHaveLength(2);
    expect(scan.faces.map((x) => Math.round(x.box.x / 512)).sort()).toEqual([0, 1]);
    const err = await expectSonicError(
      Promise.resolve().then(() => chooseFace(scan, 256)),
      'MULTIPLE_FACES',
    );
    expect(err.publicMessage).toMatch(/2 faces/);
  });

  it.each([
    [256, 320, 'jpg'],
    [320, 400, 'png'],
    [400, 500, 'png'],
    [512, 640, 'jpg'],
    [640, 800, 'jpg'],
    [300, 400, 'webp'],
    [160, 200, 'png'],
  ])('finds the generated portrait at %i×%i (%s), its eyes and mouth where they were drawn', async (width, height, ext) => {
    const drawn: PortraitGeometry = await makePortrait(f(`p${width}.${ext}`), { width, height });
    const scan = await detector.detect(f(`p${width}.${ext}`));
    expect(scan.faces).toHaveLength(1);
    const l = scan.faces[0]!.landmarks;
    const tol = drawn.face.rx * 0.15;
    expect(Math.abs(l.left_eye.x - drawn.eyes[0].x)).toBeLessThan(tol);
    expect(Math.abs(l.right_eye.x - drawn.eyes[1].x)).toBeLessThan(tol);
    expect(Math.abs(l.left_eye.y - drawn.eyes[0].y)).toBeLessThan(tol);
    const mouth = l.lips_inner.reduce((s, p) => ({ x: s.x + p.x / 20, y: s.y + p.y / 20 }), { x: 0, y: 0 });
    expect(Math.abs(mouth.x - drawn.mouth.cx)).toBeLessThan(tol);
    expect(Math.abs(mouth.y - drawn.mouth.cy)).toBeLessThan(tol);
  });

  it('is loaded once per process and leaves the process error handlers alone', async () => {
    expect(await FaceDetector.shared()).toBe(detector);
    const emscripten = [...process.listeners('uncaughtException'), ...process.listeners('unhandledRejection')].filter((l) =>
      /ExitStatus|throw reason/.test(String(l)),
    );
    expect(emscripten).toEqual([]);
  });

  it('rejects with the abort reason when the task is cancelled', async () => {
    const ac = new AbortController();
    const reason = new Error('revoked');
    ac.abort(reason);
    await expect(detector.detect(astronautPng(), { signal: ac.signal })).rejects.toBe(reason);
  });

  // a detector of its own (Human's models are the process's; the health is the wrapper's), so the
  // faults injected here leave the process's detector to the other tests
  const ownDetector = (): Promise<FaceDetector> => (FaceDetector as unknown as { load(): Promise<FaceDetector> }).load();
  type Patchable = { detect: (input: unknown) => Promise<unknown>; tf: { tensor4d: (...a: unknown[]) => unknown } };
  const humanOf = (d: FaceDetector): Patchable => (d as unknown as { human: Patchable }).human;

  it('an unexpected fault is FACE_DETECTION_FAILED (retried once); the next detection checks the model first, and a second fault is MODEL_UNAVAILABLE for good', async () => {
    const own = await ownDetector();
    const human = humanOf(own);
    const detect = human.detect.bind(human);
    let calls = 0;
    let fail = true;
    human.detect = (input) => {
      calls++;
      return fail ? Promise.reject(new Error('memory access out of bounds')) : detect(input);
    };
    const err = await expectSonicError(own.detect(astronautPng()), 'FACE_DETECTION_FAILED');
    expect(err.message).toContain('memory access out of bounds');
    expect(err.retryable).toBe(true);
    expect(maxAttemptsFor(err.code)).toBe(2);

    // the re-check (the drawn portrait) runs before the picture, passes, and the detector works
    fail = false;
    calls = 0;
    expect((await own.detect(astronautPng())).faces).toHaveLength(1);
    expect(calls).toBe(2);
    calls = 0;
    expect((await own.detect(astronautPng())).faces).toHaveLength(1);
    expect(calls).toBe(1);

    // a fault after a passed re-check: the model cannot be trusted any more, even when it answers again
    fail = true;
    const again = await expectSonicError(own.detect(astronautPng()), 'MODEL_UNAVAILABLE');
    expect(again.message).toMatch(/failed again after passing its re-check: memory access out of bounds/);
    fail = false;
    await expectSonicError(own.detect(astronautPng()), 'MODEL_UNAVAILABLE');
    // the process's detector is another wrapper, and still the shared one
    expect(await FaceDetector.shared()).toBe(detector);
    expect((await detector.detect(astronautPng())).faces).toHaveLength(1);
  }, 120_000);

  it('a fault whose re-check fails is MODEL_UNAVAILABLE, for every detection queued behind it; a failed input allocation counts as a fault', async () => {
    const own = await ownDetector();
    const human = humanOf(own);
    human.tf = {
      ...human.tf,
      tensor4d: () => {
        throw new RangeError('Array buffer allocation failed');
      },
    };
    // three detections at once: they queue for the model as their decodes end, in no fixed order;
    // the first in the queue faults, the second's re-check fails, the third finds the model broken
    const settled = await Promise.allSettled([own.detect(astronautPng()), own.detect(astronautPng()), own.detect(astronautPng())]);
    const errors = settled.map((r) => (r.status === 'rejected' ? (r.reason as Error & { code?: string }) : undefined));
    const said = errors.map((e) => `${e?.code}: ${e?.message}`).sort();
    expect(said).toEqual([
      'FACE_DETECTION_FAILED: face detection failed: Array buffer allocation failed',
      'MODEL_UNAVAILABLE: the face detection model did not pass its check: Array buffer allocation failed',
      expect.stringMatching(/^MODEL_UNAVAILABLE: the face detection model is unusable until the process restarts/),
    ]);
    expect(await FaceDetector.shared()).toBe(detector);
  }, 120_000);
});

describe('chooseFace', () => {
  const face = (x: number, size: number): FaceScan['faces'][number] => ({
    box: { x, y: 10, width: size, height: size * 1.1 },
    score: 0.9,
    landmarks: {} as never,
  });
  const scan = (...faces: FaceScan['faces']): FaceScan => ({ width: 1000, height: 800, faces, detectMs: 1 });

  it('uses the largest face when the others are less than half its area (a face in the background)', () => {
    expect(chooseFace(scan(face(0, 200), face(500, 140)), 512).box.x).toBe(0);
  });

  it('refuses a second face of at least half the area as MULTIPLE_FACES', () => {
    expect(() => chooseFace(scan(face(0, 200), face(500, 142)), 512)).toThrow(expect.objectContaining({ code: 'MULTIPLE_FACES', retryable: false }));
  });

  it('refuses a face under min_resolution / 8 as FACE_TOO_SMALL, naming the limit', () => {
    expect(chooseFace(scan(face(0, 64)), 512).box.width).toBe(64);
    expect(() => chooseFace(scan(face(0, 63)), 512)).toThrow(expect.objectContaining({ code: 'FACE_TOO_SMALL', retryable: false }));
    expect(() => chooseFace(scan(face(0, 63)), 512)).toThrow(/63 px; at min_resolution 512 it must be at least 64 px/);
    expect(chooseFace(scan(face(0, 32)), 256).box.width).toBe(32);
  });

  it('finds the astronaut too small for min_resolution 768 and large enough for 512', async () => {
    const s = await detector.detect(astronautPng());
    expect(chooseFace(s, 512)).toBe(s.faces[0]);
    await expectSonicError(
      Promise.resolve().then(() => chooseFace(s, 768)),
      'FACE_TOO_SMALL',
    );
  });
});

describe("Sonic's crop", () => {
  const box: Rect = { x: 400, y: 300, width: 100, height: 120 };

  it.each([0.1, 0.3, 0.5, 0.8, 1.0])('grows the face box by expand_ratio %f per side and makes it square (away from the borders)', (r) => {
    const c = sonicCrop(box, r, 2000, 2000);
    expect(c.width).toBe(c.height);
    // the shorter side of the grown box: the width, 100 × (1 + 2r)
    expect(c.width).toBe(Math.round(100 * (1 + 2 * r)));
    // centred on the face box
    expect(c.x + c.width / 2).toBeCloseTo(450, 0);
    expect(c.y + c.height / 2).toBeCloseTo(360, 0);
  });

  it('clamps at the borders: a face in the corner gives the largest square the clamped box allows, inside the picture', () => {
    const c = sonicCrop({ x: 10, y: 5, width: 100, height: 100 }, 0.5, 640, 480);
    // grown: x 0..160 (clamped at 0), y 0..155: square 155, moved 2.5 px towards the face's centre
    expect(c).toEqual({ x: 0, y: 0, width: 155, height: 155 });
    const edge = sonicCrop({ x: 560, y: 400, width: 80, height: 80 }, 1, 640, 480);
    expect(edge.x + edge.width).toBeLessThanOrEqual(640);
    expect(edge.y + edge.height).toBeLessThanOrEqual(480);
    expect(edge.width).toBe(edge.height);
    expect(edge.width).toBe(160); // x 480..640, y 320..480
  });

  it('follows the astronaut: expand_ratio 0.5 doubles her face box, 1.0 triples it, clamped to the 512 px picture', async () => {
    const s = await detector.detect(astronautPng());
    const b = s.faces[0]!.box;
    const half = sonicCrop(b, 0.5, 512, 512);
    const full = sonicCrop(b, 1, 512, 512);
    expect(half.width).toBeCloseTo(2 * Math.min(b.width, b.height), -1);
    expect(full.width).toBeGreaterThan(half.width);
    for (const c of [half, full]) {
      expect(c.x).toBeGreaterThanOrEqual(0);
      expect(c.y).toBeGreaterThanOrEqual(0);
      expect(c.x + c.width).toBeLessThanOrEqual(512);
      expect(c.y + c.height).toBeLessThanOrEqual(512);
      expect(inside({ x: b.x + b.width / 2, y: b.y + b.height / 2 }, c)).toBe(true);
    }
  });

  it.each([0.5, 0.8])(
    "makes preprocess's model PNG around the face: at expand_ratio %f the face is found again at the centre, filling its share of the square",
    async (ratio) => {
      const scan = await detector.detect(astronautPng());
      const face = chooseFace(scan, 512);
      const crop = sonicCrop(face.box, ratio, scan.width, scan.height);
      // as preprocess calls it
      const out = f(`crop${ratio}.png`);
      const size = await toModelPng(astronautPng(), out, { maxSide: 2048, crop, size: modelSize(crop.width, crop.height, 512) });
      expect(size).toEqual({ width: 512, height: 512 });
      const again = await detector.detect(out);
      expect(again.faces).toHaveLength(1);
      const b = again.faces[0]!.box;
      // grown by `ratio` per side and squared on the shorter (width): the face is 1 / (1 + 2 ratio) of
      // the square's width, unless the picture's border clamped the crop
      const k = 512 / crop.width;
      const share = face.box.width / crop.width;
      if (crop.x > 0 && crop.y > 0 && crop.x + crop.width < scan.width && crop.y + crop.height < scan.height) {
        expect(share).toBeCloseTo(1 / (1 + 2 * ratio), 1);
      }
      expect(Math.abs(b.width / 512 - share)).toBeLessThan(0.05 * share + 0.02);
      expect(Math.abs(b.height / 512 - (face.box.height * k) / 512)).toBeLessThan(0.05 * share + 0.02);
      // the face's centre is where the crop puts it: near the square's centre (the crop is centred on the face box)
      const centre = { x: b.x + b.width / 2, y: b.y + b.height / 2 };
      const expected = { x: (face.box.x + face.box.width / 2 - crop.x) * k, y: (face.box.y + face.box.height / 2 - crop.y) * k };
      expect(Math.abs(centre.x - expected.x)).toBeLessThan(0.04 * 512);
      expect(Math.abs(centre.y - expected.y)).toBeLessThan(0.04 * 512);
      expect(Math.abs(centre.x - 256)).toBeLessThan(0.06 * 512);
      expect(Math.abs(centre.y - 256)).toBeLessThan(0.06 * 512);
    },
  );

  it("sizes the model's input as Sonic: short side min_resolution, both sides multiples of 64", () => {
    expect(modelSize(186, 186, 512)).toEqual({ width: 512, height: 512 });
    expect(modelSize(400, 500, 512)).toEqual({ width: 512, height: 640 });
    expect(modelSize(1000, 750, 256)).toEqual({ width: 320, height: 256 });
  });
});
