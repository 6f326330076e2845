/**
 * The EXIF orientation of a JPEG: phones store an upright photo sideways and say so in the
 * Orientation tag of the APP1 "Exif" segment.
 */

/**
 * The EXIF orientation tag (0x0112) of a JPEG, read from the TIFF structure of its APP1 "Exif"
 * segment (big- and little-endian). Only the segments before the image data are scanned, so
 * the first 128 KiB of the file suffice.
 *
 * @returns 1..8; 1 when the buffer is not a JPEG, has no Exif segment or no valid tag.
 */
export function exifOrientation(buf: Buffer): number {
  if (buf.length < 4 || buf[0] !== 0xff || buf[1] !== 0xd8) return 1;
  let off = 2;
  while (off + 4 <= buf.length) {
    if (buf[off] !== 0xff) return 1;
    const marker = buf[off + 1];
    if (marker === 0xff) {
      off += 1;
      continue;
    } // fill byte
    // SOS or EOI: no metadata after this point; standalone markers have no length
    if (marker === 0xda || marker === 0xd9) return 1;
    if (marker === 0x01 || (marker !== undefined && marker >= 0xd0 && marker <= 0xd7)) {
      off += 2;
      continue;
    }
    const len = buf.readUInt16BE(off + 2);
    if (len < 2) return 1;
    const start = off + 4;
    const end = Math.min(buf.length, off + 2 + len);
    if (marker === 0xe1 && end - start >= 6 && buf.toString('latin1', start, start + 6) === 'Exif\0\0') {
      const found = tiffOrientation(buf.subarray(start + 6, end));
      if (found !== undefined) return found;
    }
    off += 2 + len;
  }
  return 1;
}

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
