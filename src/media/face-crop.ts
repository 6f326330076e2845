/**
 * What preprocess does with the faces it found: which face a portrait's task uses (or why none),
 * and Sonic's square crop around it.
 */
import { SonicError } from '../core/errors.js';
import type { DetectedFace, FaceScan, Rect } from './face.js';

/** A second face at least this share of the largest face's box area makes the portrait ambiguous. */
export const MULTIPLE_FACES_AREA_RATIO = 0.5;
/** The face box's shorter side must be at least min_resolution divided by this. */
export const FACE_MIN_FRACTION = 8;

/**
 * The face a task animates, by these rules (the same with and without `crop_to_face`):
 *
 * - no face → `NO_FACE_DETECTED`;
 * - two faces or more, the second largest box at least {@link MULTIPLE_FACES_AREA_RATIO} of the
 *   largest's area → `MULTIPLE_FACES` (which one to animate would be a guess); smaller faces (in
 *   the background, on a poster) are ignored and the largest is used;
 * - the face box's shorter side under `minResolution / 8` px → `FACE_TOO_SMALL`: its crop (twice
 *   the face at the default expand_ratio 0.5) would have to be enlarged more than 4× to the
 *   model's `minResolution`, so Sonic would animate a blur (64 px at 512, 32 px at 256).
 *
 * All three are permanent: the same picture fails the same way every time.
 */
export function chooseFace(scan: FaceScan, minResolution: number): DetectedFace {
  const [first, second] = scan.faces;
  if (!first) {
    throw new SonicError('NO_FACE_DETECTED', `no face found in the ${scan.width}×${scan.height} px portrait`, {
      safe: 'no face was found in the portrait: use a photo with one clearly visible, frontal face',
      details: { field: 'image', width: scan.width, height: scan.height },
    });
  }
  const area = (f: DetectedFace): number => f.box.width * f.box.height;
  if (second && area(second) >= MULTIPLE_FACES_AREA_RATIO * area(first)) {
    const text = `the portrait shows ${scan.faces.length} faces of similar size; Sonic animates one face: crop the photo to the face to animate`;
    throw new SonicError('MULTIPLE_FACES', text, { safe: text, details: { field: 'image', faces: scan.faces.length } });
  }
  const side = Math.min(first.box.width, first.box.height);
  const min = Math.ceil(minResolution / FACE_MIN_FRACTION);
  if (side < min) {
    const text = `the face is ${Math.round(side)} px; at min_resolution ${minResolution} it must be at least ${min} px (min_resolution / ${FACE_MIN_FRACTION}): use a closer photo or a lower min_resolution`;
    throw new SonicError('FACE_TOO_SMALL', text, { safe: text, details: { field: 'image', min, limit: min } });
  }
  return first;
}

/**
 * Sonic's face crop (`process_bbox` of its test_preprocess.py): the face box grown by
 * `expandRatio` × its width (height) on the left and right (top and bottom), clamped to the
 * picture, then made square with the shorter side of the grown box, centred on the grown box but
 * moved towards the face's centre as far as the longer side allows. Corners are rounded to whole
 * pixels, so the square stays inside the picture.
 */
export function sonicCrop(box: Rect, expandRatio: number, width: number, height: number): Rect {
  const [bx1, by1, bx2, by2] = [box.x, box.y, box.x + box.width, box.y + box.height];
  const ex1 = Math.max(bx1 - expandRatio * box.width, 0);
  const ey1 = Math.max(by1 - expandRatio * box.height, 0);
  const ex2 = Math.min(bx2 + expandRatio * box.width, width);
  const ey2 = Math.min(by2 + expandRatio * box.height, height);
  const h = ey2 - ey1;
  const w = ex2 - ex1;
  const half = Math.min(h, w) / 2;
  const srcCx = (bx1 + bx2) / 2;
  const srcCy = (by1 + by2) / 2;
  let cx = (ex1 + ex2) / 2;
  let cy = (ey1 + ey2) / 2;
  const d = Math.abs(h - w) / 2;
  if (w < h) cy += Math.sign(srcCy - cy) * Math.min(d, Math.abs(srcCy - cy));
  else cx += Math.sign(srcCx - cx) * Math.min(d, Math.abs(srcCx - cx));
  // Python's round() rounds halves to even; the difference is at most a pixel, and the side must
  // stay square, so both corners come from one rounded origin and one rounded side
  const side = Math.max(1, Math.min(Math.round(2 * half), width, height));
  const x = clamp(Math.round(cx - half), 0, width - side);
  const y = clamp(Math.round(cy - half), 0, height - side);
  return { x, y, width: side, height: side };
}

/**
 * The model's input size for a picture (or crop) of `width` × `height`, as Sonic resizes it: the
 * short side scaled to `minResolution`, both sides rounded to multiples of 64 (a square crop
 * gives `minResolution` × `minResolution`).
 */
export function modelSize(width: number, height: number, minResolution: number): { width: number; height: number } {
  const scale = minResolution / Math.min(width, height);
  const round64 = (n: number): number => Math.max(64, Math.round((n * scale) / 64) * 64);
  return { width: round64(width), height: round64(height) };
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
