import { execFileSync } from 'node:child_process';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { makePortrait, makeTone } from '../../../src/media/samples.js';
import { sniff, SNIFF_BYTES } from '../../../src/media/sniff.js';
import { tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('sniff');

async function head(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

// file name -> expected format; every file is made by ffmpeg with the real encoder
const AUDIO = { 'a.wav': 'wav', 'a.mp3': 'mp3', 'a.m4a': 'm4a', 'a.aac': 'aac', 'a.flac': 'flac', 'a.ogg': 'ogg', 'a.opus': 'ogg' } as const;
const IMAGES = { 'p.jpg': 'jpeg', 'p.png': 'png', 'p.webp': 'webp' } as const;

beforeAll(async () => {
  await Promise.all(Object.keys(AUDIO).map((f) => makeTone(join(dir, f), 0.5)));
  await Promise.all(Object.keys(IMAGES).map((f) => makePortrait(join(dir, f), { width: 64, height: 80 })));
  // no ID3 tag: the file starts with an MPEG frame header
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'sine=d=0.5', '-c:a', 'libmp3lame', '-id3v2_version', '0', join(dir, 'bare.mp3')]);
  await writeFile(join(dir, 'text.wav'), 'this is not audio, only text that pretends to be a WAV file\n');
});

describe('sniff', () => {
  it.each(Object.entries(AUDIO))('recognises %s as audio %s', async (file, format) => {
    const s = sniff(await head(join(dir, file)));
    expect(s).toMatchObject({ kind: 'audio', format });
    expect(s?.contentType).toMatch(/^audio\//);
  });

  it.each(Object.entries(IMAGES))('recognises %s as image %s', async (file, format) => {
    expect(sniff(await head(join(dir, file)))).toEqual({ kind: 'image', format, contentType: `image/${format}` });
  });

  it('recognises an MP3 without ID3 tag by its frame sync', async () => {
    expect((await head(join(dir, 'bare.mp3'))).toString('latin1', 0, 3)).not.toBe('ID3');
    expect(sniff(await head(join(dir, 'bare.mp3')))?.format).toBe('mp3');
  });

  it('does not trust the file name: a text file named .wav is nothing', async () => {
    expect(sniff(await head(join(dir, 'text.wav')))).toBeUndefined();
  });

  it('tells raw MPEG audio frames from ADTS AAC by the layer bits', () => {
    expect(sniff(Buffer.from([0xff, 0xfb, 0x90, 0x64, 0, 0]))?.format).toBe('mp3'); // MPEG-1 layer III, 128 kb/s
    expect(sniff(Buffer.from([0xff, 0xf1, 0x50, 0x80, 0, 0]))?.format).toBe('aac');
    expect(sniff(Buffer.from([0xff, 0xf9, 0x50, 0x80, 0, 0]))?.format).toBe('aac');
    expect(sniff(Buffer.from([0xff, 0xfb, 0xf0, 0x64]))).toBeUndefined(); // bitrate index 15 is invalid
    expect(sniff(Buffer.from('ID3\x04\x00\x00', 'latin1'))?.format).toBe('mp3');
  });

  it('accepts only audio MP4 brands and needs the full magic', () => {
    const ftyp = (brand: string): Buffer => Buffer.concat([Buffer.from([0, 0, 0, 20]), Buffer.from(`ftyp${brand}\0\0\0\0${brand}`, 'latin1')]);
    expect(sniff(ftyp('M4A '))?.format).toBe('m4a');
    expect(sniff(ftyp('qt  '))).toBeUndefined();
    expect(sniff(Buffer.from('RIFF\0\0\0\0AVI ', 'latin1'))).toBeUndefined();
    expect(sniff(Buffer.from([0xff, 0xd8]))).toBeUndefined();
    expect(sniff(Buffer.alloc(0))).toBeUndefined();
  });
});
