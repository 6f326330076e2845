/**
 * The generated sample portrait: a shaded, frontal face drawn pixel by pixel (no downloads, no
 * image library), realistic enough in its proportions and shading for a face detector trained on
 * photographs (BlazeFace) to find it. Its geometry is returned with the pixels, so tests know
 * where the mouth, the eyes and the face are without detecting anything.
 */
import type { RgbImage } from './geometry.js';

/** Where the drawn face is, in pixels of the picture. */
export interface PortraitGeometry {
  /** Centre of the face oval and its half-width and half-height. */
  face: { cx: number; cy: number; rx: number; ry: number };
  /** Centre of the mouth (the line between the lips) and its half-width. */
  mouth: { cx: number; cy: number; rx: number };
  /** Centres of the eyes, left and right as seen. */
  eyes: [{ x: number; y: number }, { x: number; y: number }];
}

type Rgb = readonly [number, number, number];

const SKIN: Rgb = [222, 170, 138];
const HAIR: Rgb = [58, 38, 28];
const SHIRT: Rgb = [52, 82, 138];
const LIPS: Rgb = [176, 84, 86];
const IRIS: Rgb = [88, 62, 40];
const CHEEK: Rgb = [214, 140, 124];
const HIGHLIGHT: Rgb = [246, 206, 178];
const NOSTRIL: Rgb = [70, 40, 36];
const LOWER_LIP: Rgb = [190, 94, 96];
const LIP_LINE: Rgb = [92, 34, 38];
const EYE_WHITE: Rgb = [236, 232, 226];
const PUPIL: Rgb = [16, 12, 12];
const GLINT: Rgb = [250, 250, 250];
const LID: Rgb = [60, 36, 30];

/**
 * Draws the portrait: a head and shoulders centred like a passport photo, the face about 40% of
 * the picture's width (of its height × 0.8 when the picture is wider than that), lit from the
 * upper left, on a blue-grey gradient.
 */
export function drawPortrait(width: number, height: number): RgbImage & { geometry: PortraitGeometry } {
  const s = Math.min(width, height * 0.8);
  const cx = width / 2;
  const cy = height * 0.47;
  const a = 0.2 * s; // face half-width
  const b = 0.27 * s; // face half-height
  const eyeY = cy - 0.08 * b;
  const eyeDx = 0.4 * a;
  const mouthY = cy + 0.56 * b;
  const noseY = cy + 0.3 * b;
  const geometry: PortraitGeometry = {
    face: { cx, cy, rx: a, ry: b },
    mouth: { cx, cy: mouthY, rx: 0.36 * a },
    eyes: [
      { x: cx - eyeDx, y: eyeY },
      { x: cx + eyeDx, y: eyeY },
    ],
  };
  const rgb = Buffer.allocUnsafe(width * height * 3);
  const px: [number, number, number] = [0, 0, 0];
  const paint = (c: Rgb, alpha: number): void => {
    if (alpha <= 0) return;
    const k = alpha >= 1 ? 1 : alpha;
    px[0] += (c[0] - px[0]) * k;
    px[1] += (c[1] - px[1]) * k;
    px[2] += (c[2] - px[2]) * k;
  };
  const shade = (f: number, alpha: number): void => {
    if (alpha <= 0) return;
    const m = 1 + (f - 1) * Math.min(1, alpha);
    px[0] *= m;
    px[1] *= m;
    px[2] *= m;
  };
  const lit: [number, number, number] = [0, 0, 0];
  const sides = [-1, 1] as const;
  for (let y = 0; y < height; y++) {
    const t = y / height;
    const v = (y - cy) / b;
    const rx = a * (1 - 0.16 * Math.max(0, v) * Math.max(0, v)); // the face is an egg, narrower at the chin
    const fringe = cy - 0.55 * b;
    const nearEyes = Math.abs(y - eyeY) < 0.3 * b;
    const nearNose = y > eyeY && y < noseY + 0.15 * b;
    const nearMouth = Math.abs(y - mouthY) < 0.25 * b;
    const chinShadow = soft(cy + 1.15 * b - y, 0.15 * b);
    for (let x = 0; x < width; x++) {
      px[0] = 150 + 40 * t;
      px[1] = 165 + 30 * t;
      px[2] = 190 + 20 * t;
      // neck and shoulders
      const neck = box(x, y, cx - 0.5 * a, cy + 0.5 * b, cx + 0.5 * a, cy + 1.5 * b);
      if (neck > 0) {
        paint(SKIN, neck);
        shade(0.62, neck * chinShadow); // the chin's shadow on the neck
      }
      paint(SHIRT, ellipse(x, y, cx, cy + 1.95 * b, 2.3 * a, 0.75 * b));
      if (Math.abs(x - cx) < 1.3 * a && y > cy - 1.3 * b && y < cy + 1.1 * b) {
        // hair behind the head, ears
        paint(HAIR, ellipse(x, y, cx, cy - 0.2 * b, 1.12 * a, 0.98 * b) * soft(cy + 0.25 * b - y, 0.08 * b));
        for (const side of sides) {
          const ear = ellipse(x, y, cx + side * 0.98 * a, cy + 0.02 * b, 0.14 * a, 0.22 * b);
          paint(SKIN, ear);
          shade(0.8, ear);
        }
        const face = ellipse(x, y, cx, cy, rx, b);
        if (face > 0)
          face: {
            // shaded like an ellipsoid lit from the upper left
            const u = (x - cx) / rx;
            const z = Math.sqrt(Math.max(0, 1 - u * u - v * v));
            const light = 0.62 + 0.3 * z + 0.1 * (-u * 0.6 - v * 0.4) * z;
            lit[0] = SKIN[0] * light;
            lit[1] = SKIN[1] * light;
            lit[2] = SKIN[2] * light;
            paint(lit, face);
            const hair = soft(fringe + 0.12 * b * Math.cos(((x - cx) / a) * 1.6) - y, 0.03 * b);
            if (hair >= 1) {
              paint(HAIR, 1);
              break face;
            }
            for (const side of sides) paint(CHEEK, 0.25 * ellipse(x, y, cx + side * 0.5 * a, cy + 0.3 * b, 0.22 * a, 0.16 * b, 0.12 * a));
            if (nearEyes) {
              // eye sockets: the shadow under the brow ridge
              for (const side of sides) shade(0.82, ellipse(x, y, cx + side * eyeDx, eyeY - 0.02 * b, 0.3 * a, 0.16 * b, 0.12 * a));
            }
            if (nearNose) {
              // shadowed sides, a lit ridge, nostrils
              shade(0.8, ellipse(x, y, cx - 0.13 * a, noseY - 0.08 * b, 0.07 * a, 0.2 * b, 0.06 * a));
              shade(0.9, ellipse(x, y, cx + 0.13 * a, noseY - 0.08 * b, 0.06 * a, 0.2 * b, 0.05 * a));
              paint(HIGHLIGHT, 0.35 * ellipse(x, y, cx, noseY - 0.15 * b, 0.05 * a, 0.2 * b, 0.04 * a));
              shade(0.78, ellipse(x, y, cx, noseY + 0.06 * b, 0.2 * a, 0.05 * b, 0.05 * a));
              for (const side of sides) paint(NOSTRIL, 0.8 * ellipse(x, y, cx + side * 0.08 * a, noseY + 0.06 * b, 0.05 * a, 0.025 * b));
            }
            if (nearMouth) {
              // the lips, the dark line between them, a shadow under the lower lip
              shade(0.85, ellipse(x, y, cx, mouthY + 0.14 * b, 0.28 * a, 0.05 * b, 0.05 * a));
              paint(LIPS, ellipse(x, y, cx, mouthY - 0.03 * b, 0.36 * a, 0.06 * b));
              paint(LOWER_LIP, ellipse(x, y, cx, mouthY + 0.035 * b, 0.32 * a, 0.07 * b));
              paint(LIP_LINE, ellipse(x, y, cx, mouthY, 0.34 * a, 0.012 * b));
            }
            paint(HAIR, hair);
          }
        if (nearEyes) {
          // whites, iris, pupil, a highlight, the upper lid, and brows
          for (let i = 0; i < 2; i++) {
            const e = geometry.eyes[i]!;
            const white = ellipse(x, y, e.x, e.y, 0.2 * a, 0.075 * b);
            if (white > 0) {
              paint(EYE_WHITE, white);
              paint(IRIS, white * ellipse(x, y, e.x, e.y, 0.085 * a, 0.085 * a));
              paint(PUPIL, white * ellipse(x, y, e.x, e.y, 0.04 * a, 0.04 * a));
              paint(GLINT, white * ellipse(x, y, e.x - 0.03 * a, e.y - 0.03 * a, 0.015 * a, 0.015 * a));
              shade(0.55, white * soft(e.y - 0.045 * b - y, 0.02 * b));
            }
            const lid = ellipse(x, y, e.x, e.y - 0.005 * b, 0.22 * a, 0.085 * b) - ellipse(x, y, e.x, e.y + 0.012 * b, 0.21 * a, 0.085 * b);
            if (lid > 0) paint(LID, lid * soft(e.y - y, 0.01 * b));
            const side = i === 0 ? -1 : 1;
            const arch = e.y - 0.2 * b - 0.03 * b * Math.cos(((x - e.x) / a) * 4 + side * 0.4);
            paint(HAIR, ellipse(x, y, e.x + side * 0.02 * a, arch, 0.26 * a, 0.028 * b));
          }
        }
      }
      const o = (y * width + x) * 3;
      rgb[o] = clampByte(px[0]);
      rgb[o + 1] = clampByte(px[1]);
      rgb[o + 2] = clampByte(px[2]);
    }
  }
  return { width, height, rgb, geometry };
}

/** Coverage (0..1) of an ellipse at a pixel, anti-aliased over about one pixel, or over `feather` pixels. */
function ellipse(x: number, y: number, cx: number, cy: number, rx: number, ry: number, feather = 1): number {
  const dx = (x - cx) / rx;
  const dy = (y - cy) / ry;
  const r = Math.sqrt(dx * dx + dy * dy);
  // distance to the edge, approximately in pixels
  const d = (r - 1) * Math.min(rx, ry);
  return soft(-d, Math.max(1, feather));
}

/** Coverage of an axis-aligned box with 1-pixel soft edges. */
function box(x: number, y: number, x0: number, y0: number, x1: number, y1: number): number {
  return Math.min(soft(x - x0, 1), soft(x1 - x, 1), soft(y - y0, 1), soft(y1 - y, 1));
}

/** 0 for `d` below -w/2, 1 above w/2, a smooth ramp between. */
function soft(d: number, w: number): number {
  const t = d / w + 0.5;
  if (t <= 0) return 0;
  if (t >= 1) return 1;
  return t * t * (3 - 2 * t);
}

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}
