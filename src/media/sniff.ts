/**
 * Recognises the accepted media formats from their magic bytes, without trusting file names or
 * declared content types.
 */

/** The formats sonicflow accepts. */
export type AudioFormat = 'wav' | 'mp3' | 'm4a' | 'aac' | 'flac' | 'ogg';
export type ImageFormat = 'jpeg' | 'png' | 'webp';

/** What {@link sniff} recognised. */
export type Sniffed = { kind: 'audio'; format: AudioFormat; contentType: string } | { kind: 'image'; format: ImageFormat; contentType: string };

/** How many leading bytes {@link sniff} looks at; reading more is harmless. */
export const SNIFF_BYTES = 64;

const CONTENT_TYPES: Record<AudioFormat | ImageFormat, string> = {
  wav: 'audio/wav',
  mp3: 'audio/mpeg',
  m4a: 'audio/mp4',
  aac: 'audio/aac',
  flac: 'audio/flac',
  ogg: 'audio/ogg',
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
};

// ISO BMFF brands of audio-bearing MP4 files (an `isom`/`mp42` upload may carry video too; ffprobe decides later)
const M4A_BRANDS = new Set(['M4A ', 'M4B ', 'mp42', 'mp41', 'isom', 'iso2', 'dash']);

/**
 * Identifies the format of a file from its first bytes ({@link SNIFF_BYTES} suffice).
 *
 * Recognises WAV (RIFF/WAVE, RF64), MP3 (ID3 tag or MPEG audio frame sync), raw ADTS AAC,
 * M4A (`ftyp` box with an audio MP4 brand), FLAC, Ogg (Vorbis, Opus), JPEG, PNG and WebP.
 *
 * @returns the kind, format and IANA content type, or `undefined` when nothing matches.
 */
export function sniff(head: Buffer): Sniffed | undefined {
  const format = sniffFormat(head);
  if (format === undefined) return undefined;
  const contentType = CONTENT_TYPES[format];
  return format === 'jpeg' || format === 'png' || format === 'webp' ? { kind: 'image', format, contentType } : { kind: 'audio', format, contentType };
}

function sniffFormat(b: Buffer): AudioFormat | ImageFormat | undefined {
  const ascii = (start: number, end: number): string => (b.length >= end ? b.toString('latin1', start, end) : '');
  const riff = ascii(0, 4);
  if (riff === 'RIFF' || riff === 'RF64') {
    if (ascii(8, 12) === 'WAVE') return 'wav';
    if (riff === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
    return undefined;
  }
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (ascii(0, 8) === '\x89PNG\r\n\x1a\n') return 'png';
  if (ascii(0, 4) === 'fLaC') return 'flac';
  if (ascii(0, 4) === 'OggS') return 'ogg';
  if (ascii(0, 3) === 'ID3') return 'mp3';
  if (ascii(4, 8) === 'ftyp') return isAudioMp4(b) ? 'm4a' : undefined;
  if (isAdts(b)) return 'aac';
  if (isMpegAudioFrame(b)) return 'mp3';
  return undefined;
}

function isAudioMp4(b: Buffer): boolean {
  const boxSize = b.readUInt32BE(0);
  const end = Math.min(b.length, boxSize >= 16 ? boxSize : 16);
  // major brand at 8, minor version at 12, compatible brands from 16
  for (let off = 8; off + 4 <= end; off += off === 8 ? 8 : 4) {
    if (M4A_BRANDS.has(b.toString('latin1', off, off + 4))) return true;
  }
  return false;
}

// ADTS header: 12-bit sync 0xFFF, then the layer bits are always 00 (0xFFF1 / 0xFFF9, or 0xFFF0 / 0xFFF8 with CRC)
function isAdts(b: Buffer): boolean {
  const b0 = b[0];
  const b1 = b[1];
  return b0 === 0xff && b1 !== undefined && (b1 & 0xf6) === 0xf0;
}

// MPEG audio frame: 11-bit sync 0xFFE, and neither a reserved version, layer, bitrate nor sample rate
function isMpegAudioFrame(b: Buffer): boolean {
  const [b0, b1, b2] = [b[0], b[1], b[2]];
  if (b0 !== 0xff || b1 === undefined || b2 === undefined) return false;
  if ((b1 & 0xe0) !== 0xe0) return false;
  const version = (b1 >> 3) & 0x3;
  const layer = (b1 >> 1) & 0x3;
  const bitrate = b2 >> 4;
  const sampleRate = (b2 >> 2) & 0x3;
  return version !== 1 && layer !== 0 && bitrate !== 0xf && sampleRate !== 3;
}
