/**
 * The pixel math of the preview renderer: a portrait whose jaw and lips move, placed by the
 * face's landmarks (a {@link FaceRig}). Per frame a {@link Pose} says how far the mouth opens,
 * whether it is wide or rounded, and how the head nods and tilts; the jaw, chin and lower lip
 * move down, the upper lip a little up, the opening between the lips shows a dark mouth, and the
 * rest of the face stays where it is. Head motion moves the head (face, hair, ears) over a still
 * neck and background. Without landmarks the rig assumes a centred, upright portrait.
 */
import type { FaceLandmarks, Point, RgbImage } from './geometry.js';

export type { RgbImage } from './geometry.js';

/** Where the moving parts of a face are, in pixels of the picture being animated. */
export interface FaceRig {
  /** Centre of the mouth line (between the lips) and half the distance between its corners. */
  mouth: Point & { halfWidth: number };
  /** The bottom of the chin, the tip of the nose. */
  chin: Point;
  nose: Point;
  /** Centre of the face oval and its half-width and half-height. */
  face: Point & { rx: number; ry: number };
}

/** One frame's expression and head position. All zero: the still portrait. */
export interface Pose {
  /** Mouth opening, 0 (closed) to 1.5; at 1 the jaw drops a third of the mouth-to-chin distance. */
  open: number;
  /** Mouth shape, -1 (rounded, "o") to 1 (wide, "e"). */
  shape: number;
  /** Head nod, as a fraction of the face height (positive: down). */
  nod: number;
  /** Head tilt in radians (positive: clockwise). */
  tilt: number;
}

/** The largest mouth opening and how far it drops the jaw, as a share of mouth-to-chin. */
const MAX_OPEN = 1.5;
const JAW_DROP = 0.33;
/** The upper lip rises this share of the jaw drop. */
const LIP_LIFT = 0.15;
/** A fully wide or rounded mouth is this much wider or narrower. */
const SHAPE_STRETCH = 0.14;
/** Colour of the inside of the open mouth. */
const CAVITY = [52, 20, 24] as const;

/** The rig of a face from its landmarks, multiplied by `scale` (landmarks of a picture drawn at another size). */
export function rigFromLandmarks(l: Pick<FaceLandmarks, 'lips_outer' | 'lips_inner' | 'face_oval' | 'nose_tip' | 'chin'>, scale = 1): FaceRig {
  const s = (p: Point): Point => ({ x: p.x * scale, y: p.y * scale });
  const inner = l.lips_inner.map(s);
  const outer = l.lips_outer.map(s);
  const oval = l.face_oval.map(s);
  const xs = outer.map((p) => p.x);
  const mouth = { x: mean(inner.map((p) => p.x)), y: mean(inner.map((p) => p.y)), halfWidth: Math.max(2, (Math.max(...xs) - Math.min(...xs)) / 2) };
  const ox = oval.map((p) => p.x);
  const oy = oval.map((p) => p.y);
  const face = {
    x: (Math.max(...ox) + Math.min(...ox)) / 2,
    y: (Math.max(...oy) + Math.min(...oy)) / 2,
    rx: Math.max(4, (Math.max(...ox) - Math.min(...ox)) / 2),
    ry: Math.max(4, (Math.max(...oy) - Math.min(...oy)) / 2),
  };
  return { mouth, chin: s(l.chin), nose: s(l.nose_tip), face };
}

/** The rig assumed without landmarks: a centred, upright portrait (face a third of the width, mouth two thirds down). */
export function centredRig(width: number, height: number): FaceRig {
  return {
    mouth: { x: width / 2, y: 0.64 * height, halfWidth: 0.1 * width },
    chin: { x: width / 2, y: 0.76 * height },
    nose: { x: width / 2, y: 0.55 * height },
    face: { x: width / 2, y: 0.5 * height, rx: 0.3 * width, ry: 0.28 * height },
  };
}

/**
 * Animates one picture with one rig: the weights of every moving region are computed once, each
 * frame then costs a few multiply-adds and one bilinear sample per pixel of the head's box.
 */
export class FaceAnimator {
  private readonly x0: number;
  private readonly y0: number;
  private readonly bw: number;
  private readonly bh: number;
  /** Per pixel of the box: head, jaw, upper-lip and mouth-shape weights. */
  private readonly head: Float32Array;
  private readonly jaw: Float32Array;
  private readonly lip: Float32Array;
  private readonly mouthW: Float32Array;

  constructor(
    readonly still: RgbImage,
    readonly rig: FaceRig,
  ) {
    const { width: w, height: h } = still;
    const f = rig.face;
    // the head and what moves with it lie within 1.7 face radii of its centre, and down to the neck
    this.x0 = clampInt(f.x - 1.7 * f.rx, 0, w);
    this.y0 = clampInt(f.y - 1.7 * f.ry, 0, h);
    const x1 = clampInt(f.x + 1.7 * f.rx, 0, w);
    const y1 = clampInt(Math.max(f.y + 1.7 * f.ry, rig.chin.y + 0.8 * (rig.chin.y - rig.mouth.y)), 0, h);
    this.bw = Math.max(0, x1 - this.x0);
    this.bh = Math.max(0, y1 - this.y0);
    const n = this.bw * this.bh;
    this.head = new Float32Array(n);
    this.jaw = new Float32Array(n);
    this.lip = new Float32Array(n);
    this.mouthW = new Float32Array(n);
    const m = rig.mouth;
    const down = Math.max(2, rig.chin.y - m.y);
    const up = Math.max(2, m.y - rig.nose.y);
    for (let j = 0; j < this.bh; j++) {
      const y = this.y0 + j;
      const t = (y - m.y) / down; // 0 at the mouth line, 1 at the chin
      const jawV = t <= 0 ? 0 : t < 0.3 ? smoothstep(t / 0.3) : t <= 1 ? 1 : t < 1.7 ? 1 - smoothstep((t - 1) / 0.7) : 0;
      const u = (m.y - y) / up; // 0 at the mouth line, 1 at the nose
      const lipV = u <= 0 ? 0 : u < 0.5 ? 1 : u < 1.1 ? 1 - smoothstep((u - 0.5) / 0.6) : 0;
      const jawHalf = f.rx * (1 - 0.25 * Math.min(1, Math.max(0, t))); // the jaw narrows to the chin
      for (let i = 0; i < this.bw; i++) {
        const x = this.x0 + i;
        const k = j * this.bw + i;
        const e = Math.hypot((x - f.x) / f.rx, (y - f.y) / f.ry);
        this.head[k] = e < 1.15 ? 1 : e < 1.6 ? 1 - smoothstep((e - 1.15) / 0.45) : 0;
        const dx = Math.abs(x - m.x);
        const jawH = dx < 0.7 * jawHalf ? 1 : dx < 1.05 * jawHalf ? 1 - smoothstep((dx - 0.7 * jawHalf) / (0.35 * jawHalf)) : 0;
        this.jaw[k] = jawV * jawH;
        const g = dx / (1.4 * m.halfWidth);
        this.lip[k] = lipV * Math.exp(-g * g);
        const my = (y - m.y) / (0.6 * down);
        this.mouthW[k] = Math.exp(-(g * g + my * my));
      }
    }
  }

  /**
   * One frame: the still picture in `pose`. A neutral pose (all zero) returns `still.rgb` itself,
   * pixel-identical; otherwise a new buffer (or `out`, when large enough).
   */
  frame(pose: Pose, out?: Buffer): Buffer {
    const open = clamp(pose.open, 0, MAX_OPEN);
    const shape = clamp(pose.shape, -1, 1);
    if (!(open > 0) && shape === 0 && pose.nod === 0 && pose.tilt === 0) return this.still.rgb;
    const { width: w, height: h, rgb: src } = this.still;
    const dst = out && out.length >= src.length ? out : Buffer.allocUnsafe(src.length);
    if (dst !== src) src.copy(dst);
    const { mouth: m, face: f, chin } = this.rig;
    const drop = JAW_DROP * Math.max(2, chin.y - m.y) * open;
    const lift = LIP_LIFT * drop;
    const stretch = SHAPE_STRETCH * shape;
    // head motion: a rotation about the neck and a vertical shift, inverted for backward mapping
    const px = f.x;
    const py = f.y + 1.4 * f.ry;
    const cos = Math.cos(-pose.tilt);
    const sin = Math.sin(-pose.tilt);
    const nod = pose.nod * 2 * f.ry;
    const stride = w * 3;
    for (let j = 0; j < this.bh; j++) {
      const y = this.y0 + j;
      let o = (y * w + this.x0) * 3;
      for (let i = 0; i < this.bw; i++, o += 3) {
        const k = j * this.bw + i;
        const x = this.x0 + i;
        const hw = this.head[k] as number;
        const jw = this.jaw[k] as number;
        const lw = this.lip[k] as number;
        const mw = this.mouthW[k] as number;
        if (hw === 0 && jw === 0 && lw === 0) continue;
        // where this pixel comes from in the still: expression first, then the head's motion
        let sx = x - (x - m.x) * stretch * mw;
        let sy = y - drop * jw + lift * lw;
        if (hw > 0) {
          const rx = px + (sx - px) * cos - (sy - nod - py) * sin;
          const ry = py + (sx - px) * sin + (sy - nod - py) * cos;
          sx += (rx - sx) * hw;
          sy += (ry - sy) * hw;
        }
        sample(src, stride, w, h, sx, sy, dst, o);
      }
    }
    if (drop >= 0.5) this.paintMouth(dst, drop, lift, stretch);
    return dst;
  }

  /** Darkens the opening between the lips: an ellipse from the raised upper lip to the dropped lower lip. */
  private paintMouth(dst: Buffer, drop: number, lift: number, stretch: number): void {
    const { width: w, height: h } = this.still;
    const m = this.rig.mouth;
    const ry = (drop + lift) * 0.42;
    const cy = m.y + (drop - lift) * 0.5;
    const rx = m.halfWidth * 0.64 * (1 + stretch);
    const x0 = clampInt(m.x - rx - 2, 0, w);
    const x1 = clampInt(m.x + rx + 2, 0, w);
    const y0 = clampInt(cy - ry - 2, 0, h);
    const y1 = clampInt(cy + ry + 2, 0, h);
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const d = (Math.hypot((x - m.x) / rx, (y - cy) / ry) - 1) * Math.min(rx, ry);
        const a = 0.78 * (d <= -1 ? 1 : d >= 1 ? 0 : smoothstep((1 - d) / 2));
        if (a <= 0) continue;
        const o = (y * w + x) * 3;
        for (let c = 0; c < 3; c++) dst[o + c] = Math.round((dst[o + c] as number) + ((CAVITY[c] as number) - (dst[o + c] as number)) * a);
      }
    }
  }
}

const centred = new WeakMap<RgbImage, FaceAnimator>();

/**
 * One frame of a portrait without landmarks (the centred rig): the mouth opened by `amount`
 * (loudness × motion scale, ≥ 0; clamped). For `amount <= 0` it returns `still.rgb` itself, so
 * silent frames are pixel-identical to the portrait.
 */
export function animateFrame(still: RgbImage, amount: number, out?: Buffer): Buffer {
  if (!(amount > 0)) return still.rgb;
  let anim = centred.get(still);
  if (!anim) centred.set(still, (anim = new FaceAnimator(still, centredRig(still.width, still.height))));
  return anim.frame({ open: amount, shape: 0, nod: 0, tilt: 0 }, out);
}

/** Bilinear sample of `src` at (sx, sy), clamped to the picture, written as 3 bytes at `dst[o]`. */
function sample(src: Buffer, stride: number, w: number, h: number, sx: number, sy: number, dst: Buffer, o: number): void {
  const cx = clamp(sx, 0, w - 1);
  const cy = clamp(sy, 0, h - 1);
  const x0 = Math.floor(cx);
  const y0 = Math.floor(cy);
  const fx = cx - x0;
  const fy = cy - y0;
  const x1 = x0 < w - 1 ? x0 + 1 : x0;
  const y1 = y0 < h - 1 ? y0 + 1 : y0;
  const p00 = y0 * stride + x0 * 3;
  const p01 = y0 * stride + x1 * 3;
  const p10 = y1 * stride + x0 * 3;
  const p11 = y1 * stride + x1 * 3;
  for (let c = 0; c < 3; c++) {
    const top = (src[p00 + c] as number) + ((src[p01 + c] as number) - (src[p00 + c] as number)) * fx;
    const bottom = (src[p10 + c] as number) + ((src[p11 + c] as number) - (src[p10 + c] as number)) * fx;
    dst[o + c] = top + (bottom - top) * fy + 0.5;
  }
}

function mean(v: number[]): number {
  return v.reduce((s, x) => s + x, 0) / Math.max(1, v.length);
}

function smoothstep(t: number): number {
  return t * t * (3 - 2 * t);
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

function clampInt(v: number, lo: number, hi: number): number {
  return Math.round(clamp(v, lo, hi));
}
