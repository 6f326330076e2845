/**
 * The EXIF orientation of a JPEG: phones store an upright photo sideways and say so in the
 * Orientation tag of the APP1 "Exif" segment. The JPEG's segments are walked by inspect.ts
 * (`imageOrientation`), for validation and decoding alike.
 */

/**
 * The Orientation tag (0x0112) of IFD0 of a TIFF structure (the payload of an APP1 segment after
 * its `Exif\0\0` prefix), either byte order.
 *
 * @returns 1..8, or undefined when the structure is malformed or has no valid tag.
 */
export function tiffOrientation(t: Buffer): number | undefined {
  if (t.length < 8) return undefined;
  const order = t.toString('latin1', 0, 2);
  if (order !== 'II' && order !== 'MM') return undefined;
  const le = order === 'II';
  const u16 = (o: number): number => (le ? t.readUInt16LE(o) : t.readUInt16BE(o));
  const u32 = (o: number): number => (le ? t.readUInt32LE(o) : t.readUInt32BE(o));
  if (u16(2) !== 42) return undefined;
  const ifd = u32(4);
  if (ifd + 2 > t.length) return undefined;
  const entries = u16(ifd);
  for (let i = 0; i < entries; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > t.length) return undefined;
    if (u16(e) !== 0x0112) continue;
    const type = u16(e + 2);
    // SHORT (3) as the spec says; LONG (4) from some writers
    const value = type === 3 ? u16(e + 8) : type === 4 ? u32(e + 8) : 0;
    return value >= 1 && value <= 8 ? value : undefined;
  }
  return undefined;
}
