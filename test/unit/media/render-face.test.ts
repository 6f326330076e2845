/**
 * The preview renderer at a real face: rendered from the astronaut photograph and its detected
 * landmarks, loud frames differ from silent ones most in the mouth, less over the rest of the
 * face, and hardly at all away from the head (measured on the decoded MP4).
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loudness } from '../../../src/media/audio.js';
import { FaceDetector, type FaceLandmarks, type Point } from '../../../src/media/face.js';
import { decodeStill, renderPreview } from '../../../src/media/render.js';
import { speechWithSilence } from '../../../src/media/samples.js';
import { FaceAnimator, rigFromLandmarks } from '../../../src/media/warp.js';
import { astronautPng } from '../../fixtures/media/photos.js';
import { grayFrames, tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('render-face');
const f = (name: string): string => join(dir, name);
const SIZE = 256; // the 512 px photograph at half size
const FPS = 25;

let landmarks: FaceLandmarks;
let frames: Buffer[];
let levels: number[];
let gap: { startS: number; endS: number };

beforeAll(async () => {
  const scan = await (await FaceDetector.shared()).detect(astronautPng());
  landmarks = scan.faces[0]!.landmarks;
  gap = await speechWithSilence(f('speech.wav'), { speech: ['Open wide, and say ah, oh, and ee.', 'Then once more.'], silenceS: 1 });
  const r = await renderPreview({ image: astronautPng(), audio: f('speech.wav'), output: f('preview.mp4'), size: SIZE, fps: FPS, face: landmarks });
  frames = grayFrames(f('preview.mp4'), r.width, r.height);
  levels = await loudness(f('speech.wav'), FPS, { frames: r.frames });
}, 180_000);

/** Regions of the 256 px frame: the mouth, the rest of the face, and what lies well away from the head. */
function regions(): { mouth: (x: number, y: number) => boolean; face: (x: number, y: number) => boolean; away: (x: number, y: number) => boolean } {
  const k = SIZE / 512;
  const box = (ps: Point[], grow: number): { x0: number; y0: number; x1: number; y1: number } => {
    const xs = ps.map((p) => p.x * k);
    const ys = ps.map((p) => p.y * k);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const gx = (x1 - x0) * grow;
    const gy = (y1 - y0) * grow;
    return { x0: x0 - gx, x1: x1 + gx, y0: y0 - gy, y1: y1 + gy };
  };
  const mouth = box(landmarks.lips_outer, 0.35);
  const face = box(landmarks.face_oval, 0);
  const cx = (face.x0 + face.x1) / 2;
  const cy = (face.y0 + face.y1) / 2;
  const rx = (face.x1 - face.x0) / 2;
  const ry = (face.y1 - face.y0) / 2;
  const inMouth = (x: number, y: number): boolean => x >= mouth.x0 && x <= mouth.x1 && y >= mouth.y0 && y <= mouth.y1;
  const e = (x: number, y: number): number => Math.hypot((x - cx) / rx, (y - cy) / ry);
  return { mouth: inMouth, face: (x, y) => e(x, y) < 1 && !inMouth(x, y), away: (x, y) => e(x, y) > 2.2 };
}

function meanDiff(a: Buffer, b: Buffer, inRegion: (x: number, y: number) => boolean): number {
  let sum = 0;
  let n = 0;
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      if (!inRegion(x, y)) continue;
      sum += Math.abs((a[y * SIZE + x] as number) - (b[y * SIZE + x] as number));
      n++;
    }
  }
  return sum / n;
}

describe('the preview renderer at the landmarks of a real face', () => {
  it('changes loud frames most in the mouth, less over the rest of the face, least away from the head', () => {
    const silentIdx = Math.round(((gap.startS + gap.endS) / 2) * FPS);
    expect(levels[silentIdx]).toBe(0);
    const silent = frames[silentIdx]!;
    const loud = levels.map((l, i) => [l, i] as const).filter(([l]) => l > 0.6);
    expect(loud.length).toBeGreaterThan(10);
    const r = regions();
    const avg = (inRegion: (x: number, y: number) => boolean): number => loud.reduce((s, [, i]) => s + meanDiff(frames[i]!, silent, inRegion), 0) / loud.length;
    const mouth = avg(r.mouth);
    const face = avg(r.face);
    const away = avg(r.away);
    expect(mouth, `mouth ${mouth.toFixed(2)}, face ${face.toFixed(2)}, away ${away.toFixed(2)}`).toBeGreaterThan(3 * face);
    expect(mouth).toBeGreaterThan(8);
    expect(face).toBeGreaterThan(away);
    // what remains away from the head is the encoder's noise
    expect(away).toBeLessThan(0.6);
  });

  it('opens the mouth between the detected lips: the opening is darker than the closed mouth', async () => {
    const still = await decodeStill(astronautPng(), SIZE);
    const anim = new FaceAnimator(still, rigFromLandmarks(landmarks, SIZE / 512));
    const open = anim.frame({ open: 1, shape: 0, nod: 0, tilt: 0 });
    const m = anim.rig.mouth;
    const lum = (rgb: Buffer, x: number, y: number): number => {
      const o = (Math.round(y) * SIZE + Math.round(x)) * 3;
      return 0.3 * rgb[o]! + 0.59 * rgb[o + 1]! + 0.11 * rgb[o + 2]!;
    };
    // a little below the mouth line, where the opening is
    const y = m.y + (anim.rig.chin.y - m.y) * 0.15;
    expect(lum(open, m.x, y)).toBeLessThan(lum(still.rgb, m.x, y) - 40);
    // the eyes do not move
    const eye = { x: landmarks.left_eye.x / 2, y: landmarks.left_eye.y / 2 };
    expect(Math.abs(lum(open, eye.x, eye.y) - lum(still.rgb, eye.x, eye.y))).toBeLessThan(2);
    // a neutral pose is the still itself
    expect(anim.frame({ open: 0, shape: 0, nod: 0, tilt: 0 })).toBe(still.rgb);
  });

  it('rounds and widens the mouth with the shape of the sound', async () => {
    const still = await decodeStill(astronautPng(), SIZE);
    const anim = new FaceAnimator(still, rigFromLandmarks(landmarks, SIZE / 512));
    const width = (rgb: Buffer): number => {
      // dark pixels along the middle of the opening
      const m = anim.rig.mouth;
      const y = Math.round(m.y + (anim.rig.chin.y - m.y) * 0.15);
      let n = 0;
      for (let x = Math.round(m.x - 2 * m.halfWidth); x < m.x + 2 * m.halfWidth; x++) {
        const o = (y * SIZE + x) * 3;
        if (rgb[o]! + rgb[o + 1]! + rgb[o + 2]! < 3 * 90) n++;
      }
      return n;
    };
    const wide = width(Buffer.from(anim.frame({ open: 1, shape: 1, nod: 0, tilt: 0 })));
    const round = width(Buffer.from(anim.frame({ open: 1, shape: -1, nod: 0, tilt: 0 })));
    expect(wide).toBeGreaterThan(round);
  });
});
