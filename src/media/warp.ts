/**
 * The pixel math of the preview renderer: a portrait deformed by one loudness value. It does
 * not know where the mouth is; it assumes a centred, upright portrait and moves the lower middle
 * of the picture (chin and mouth area) down as a "jaw", plus a small zoom and nod.
 */

/** A decoded picture: 8-bit RGB, rows top to bottom, no padding. */
export interface RgbImage {
  width: number;
  height: number;
  /** `width × height × 3` bytes. */
  rgb: Buffer;
}

/** Largest zoom, as a fraction of the size, at amount 1. */
const ZOOM = 0.03;
/** Largest downward nod, as a fraction of the height, at amount 1. */
const NOD = 0.012;
/** Largest jaw drop, as a fraction of the height, at amount 1. */
const JAW = 0.05;
/** The jaw band: displacement rises from JAW_TOP to JAW_FULL (fractions of the height), then fades to 0 at the bottom. */
const JAW_TOP = 0.6;
const JAW_FULL = 0.74;
/** Horizontal half-width (1/e) of the jaw area, as a fraction of the width. */
const JAW_WIDTH = 0.2;
/** Amounts above this are clamped: beyond it the inverse mapping would fold. */
const MAX_AMOUNT = 2;

/**
 * Renders one frame: `still` deformed by `amount` (loudness × motion scale, ≥ 0; clamped to 2).
 * For `amount <= 0` it returns `still.rgb` itself, so silent frames are pixel-identical to the
 * portrait; otherwise a new buffer (or `out`, when given and large enough).
 */
export function animateFrame(still: RgbImage, amount: number, out?: Buffer): Buffer {
  if (!(amount > 0)) return still.rgb;
  const a = Math.min(amount, MAX_AMOUNT);
  const { width: w, height: h, rgb: src } = still;
  const dst = out && out.length >= src.length ? out : Buffer.allocUnsafe(src.length);

  const zoom = 1 + ZOOM * a;
  const nod = NOD * h * a;
  const jaw = JAW * h * a;
  const cx = (w - 1) / 2;
  const cy = (h - 1) / 2;

  // the deformation is separable: zoom/nod per column and per row, the jaw as column × row weights
  const colX = new Float32Array(w);
  const colJaw = new Float32Array(w);
  for (let x = 0; x < w; x++) {
    const u = cx + (x - cx) / zoom;
    colX[x] = clamp(u, 0, w - 1);
    const g = (u - cx) / (JAW_WIDTH * w);
    colJaw[x] = jaw * Math.exp(-g * g);
  }
  const rowY = new Float32Array(h);
  const rowJaw = new Float32Array(h);
  for (let y = 0; y < h; y++) {
    const v = cy + (y - cy - nod) / zoom;
    rowY[y] = v;
    rowJaw[y] = jawProfile(v / h);
  }

  const stride = w * 3;
  const maxY = h - 1;
  let o = 0;
  for (let y = 0; y < h; y++) {
    const vy = rowY[y] as number;
    const wy = rowJaw[y] as number;
    for (let x = 0; x < w; x++) {
      const sx = colX[x] as number;
      const sy = clamp(vy - (colJaw[x] as number) * wy, 0, maxY);
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const x1 = x0 < w - 1 ? x0 + 1 : x0;
      const y1 = y0 < maxY ? y0 + 1 : y0;
      const p00 = y0 * stride + x0 * 3;
      const p01 = y0 * stride + x1 * 3;
      const p10 = y1 * stride + x0 * 3;
      const p11 = y1 * stride + x1 * 3;
      for (let c = 0; c < 3; c++) {
        const top = (src[p00 + c] as number) + ((src[p01 + c] as number) - (src[p00 + c] as number)) * fx;
        const bottom = (src[p10 + c] as number) + ((src[p11 + c] as number) - (src[p10 + c] as number)) * fx;
        dst[o++] = top + (bottom - top) * fy + 0.5;
      }
    }
  }
  return dst;
}

/** Jaw weight at a relative height `t` (0 top, 1 bottom): 0 above the band, 1 at its foot, back to 0 at the bottom. */
function jawProfile(t: number): number {
  if (t <= JAW_TOP || t >= 1) return 0;
  if (t < JAW_FULL) return smoothstep((t - JAW_TOP) / (JAW_FULL - JAW_TOP));
  return 1 - smoothstep((t - JAW_FULL) / (1 - JAW_FULL));
}

function smoothstep(t: number): number {
  return t * t * (3 - 2 * t);
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
