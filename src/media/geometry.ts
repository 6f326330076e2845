/**
 * The shapes the media code shares: decoded pictures, points and rectangles in pixels, and a
 * face's landmarks.
 */

/** A decoded picture: 8-bit RGB, rows top to bottom, no padding. */
export interface RgbImage {
  width: number;
  height: number;
  /** `width × height × 3` bytes. */
  rgb: Buffer;
}

/** A point in pixels. */
export interface Point {
  x: number;
  y: number;
}

/** An axis-aligned rectangle in pixels. */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The landmarks the preview renderer and the crop need, from the 468-point mesh. */
export interface FaceLandmarks {
  /** 36 points around the face, clockwise from the top of the forehead. */
  face_oval: Point[];
  /** 20 points around the outer edge of the lips, from the left corner (as seen) over the upper lip. */
  lips_outer: Point[];
  /** 20 points around the mouth opening, in the same order. */
  lips_inner: Point[];
  /** Centres of the eyes, left and right as seen in the picture. */
  left_eye: Point;
  right_eye: Point;
  nose_tip: Point;
  chin: Point;
}
