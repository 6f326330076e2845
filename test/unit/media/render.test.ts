import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { SonicError } from '../../../src/core/errors.js';
import { frameCount, loudness } from '../../../src/media/audio.js';
import { countFrames, probe } from '../../../src/media/probe.js';
import { decodeStill, renderPreview, type RenderResult } from '../../../src/media/render.js';
import { makeNoise, makePortrait, speechWithSilence } from '../../../src/media/samples.js';
import { animateFrame } from '../../../src/media/warp.js';
import { expectSonicError, grayFrames, meanAbsDiff, tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('render');
const f = (name: string): string => join(dir, name);
const FPS = 25;

let gap: { startS: number; endS: number; durationS: number };
let rendered: RenderResult;
const progress: number[] = [];

beforeAll(async () => {
  await makePortrait(f('face.png'), { width: 320, height: 400 });
  gap = await speechWithSilence(f('speech.wav'), { speech: ['Hello there, this is a preview.', 'And this comes after the pause.'], silenceS: 2 });
  rendered = await renderPreview({
    image: f('face.png'),
    audio: f('speech.wav'),
    output: f('preview.mp4'),
    size: 256,
    fps: FPS,
    onProgress: (p) => progress.push(p),
  });
});

/** Frame indices whose whole 1/fps window lies inside [from, to] seconds. */
function framesWithin(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = Math.ceil(from * FPS); (i + 1) / FPS <= to; i++) out.push(i);
  return out;
}

describe('speechWithSilence', () => {
  it('puts exactly silenceS of all-zero samples between two utterances', () => {
    expect(gap.endS - gap.startS).toBeCloseTo(2, 4);
    const pcm = execFileSync('ffmpeg', ['-v', 'error', '-i', f('speech.wav'), '-f', 's16le', '-c:a', 'pcm_s16le', '-']);
    const rate = 22_050;
    const peak = (from: number, to: number): number => {
      let m = 0;
      for (let s = Math.round(from * rate); s < Math.round(to * rate); s++) m = Math.max(m, Math.abs(pcm.readInt16LE(s * 2)));
      return m;
    };
    expect(peak(gap.startS, gap.endS)).toBe(0);
    expect(peak(0, gap.startS)).toBeGreaterThan(3000);
    expect(peak(gap.endS, gap.durationS)).toBeGreaterThan(3000);
  });
});

describe('renderPreview', () => {
  it('writes ceil(audio duration × fps) frames of H.264 without audio, at the requested size', async () => {
    const audioS = (await probe(f('speech.wav'))).audio?.durationS ?? 0;
    expect(rendered).toMatchObject({ frames: frameCount(audioS, FPS), fps: FPS, width: 256, height: 320 });
    expect(rendered.frames).toBe(Math.ceil(gap.durationS * FPS - 1e-6));
    expect(await countFrames(f('preview.mp4'))).toBe(rendered.frames);
    const p = await probe(f('preview.mp4'));
    expect(p.video).toMatchObject({ codec: 'h264', pixFmt: 'yuv420p', width: 256, height: 320, fps: FPS });
    expect(p.audio).toBeUndefined();
  });

  it('holds the portrait still during the silence and moves it during speech', () => {
    const frames = grayFrames(f('preview.mp4'), 256, 320);
    expect(frames).toHaveLength(rendered.frames);
    // a margin for the resampler's ringing at the edges of the gap
    const silent = framesWithin(gap.startS + 0.1, gap.endS - 0.1);
    expect(silent.length).toBeGreaterThan(40);
    const ref = frames[silent[0] as number] as Buffer;
    // the encoder is lossy: identical inputs decode to frames within a hair of each other
    for (const i of silent) expect(meanAbsDiff(frames[i] as Buffer, ref), `frame ${i}`).toBeLessThan(0.05);
    // ... and that common frame is the portrait itself (scaled by ffmpeg alone), up to coding loss
    const portrait = execFileSync('ffmpeg', [
      '-v',
      'error',
      '-i',
      f('face.png'),
      '-vf',
      'scale=256:320:flags=lanczos,format=rgb24',
      '-f',
      'rawvideo',
      '-pix_fmt',
      'gray',
      '-',
    ]);
    expect(meanAbsDiff(ref, portrait)).toBeLessThan(1);

    const speech = [...framesWithin(0.2, gap.startS - 0.2), ...framesWithin(gap.endS + 0.2, gap.durationS - 0.3)];
    const moving = speech.filter((i) => meanAbsDiff(frames[i] as Buffer, ref) > 0.5);
    expect(moving.length / speech.length).toBeGreaterThan(0.6);
    const steps = speech.slice(1).filter((i) => meanAbsDiff(frames[i] as Buffer, frames[i - 1] as Buffer) > 0.2);
    expect(steps.length / speech.length).toBeGreaterThan(0.4);
  });

  it('writes exactly the still portrait for silent frames (before encoding)', async () => {
    const still = await decodeStill(f('face.png'), 256);
    const levels = await loudness(f('speech.wav'), FPS, { frames: rendered.frames });
    for (const i of framesWithin(gap.startS + 0.1, gap.endS - 0.1)) expect(levels[i], `frame ${i}`).toBe(0);
    expect(animateFrame(still, 0)).toBe(still.rgb);
    expect(animateFrame(still, -1)).toBe(still.rgb);
    const loud = animateFrame(still, 0.8);
    expect(loud.equals(still.rgb)).toBe(false);
    expect(loud).toHaveLength(still.rgb.length);
    expect(animateFrame(still, 1e-9).equals(still.rgb)).toBe(true); // sub-pixel motion rounds away
  });

  it('reports progress from 0 to 1, never backwards', () => {
    expect(progress[0]).toBe(0);
    expect(progress.at(-1)).toBe(1);
    for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1] as number);
  });

  it('encodes silent frames pixel-identical to the still portrait when lossless (crf 0)', async () => {
    const common = { image: f('face.png'), audio: f('speech.wav'), size: 128, crf: 0 };
    const still = await renderPreview({ ...common, output: f('still.mp4'), motionScale: 0 });
    const live = await renderPreview({ ...common, output: f('live.mp4') });
    expect(live.frames).toBe(still.frames);
    const stillFrames = grayFrames(f('still.mp4'), still.width, still.height);
    const liveFrames = grayFrames(f('live.mp4'), live.width, live.height);
    const portrait = stillFrames[0] as Buffer;
    // motionScale 0: every frame is the portrait
    for (const fr of stillFrames) expect(fr.equals(portrait)).toBe(true);
    for (const i of framesWithin(gap.startS + 0.1, gap.endS - 0.1)) expect((liveFrames[i] as Buffer).equals(portrait), `frame ${i}`).toBe(true);
    const speech = framesWithin(0.2, gap.startS - 0.2);
    expect(speech.filter((i) => !(liveFrames[i] as Buffer).equals(portrait)).length).toBeGreaterThan(speech.length * 0.8);
  });

  // how long it takes is the benchmarks' business (a timed assertion here failed on a loaded machine)
  it('renders 10 s of loud audio at 512 px: 250 frames', async () => {
    await makeNoise(f('noise10.wav'), 10, { amplitude: 0.2 });
    const r = await renderPreview({ image: f('face.png'), audio: f('noise10.wav'), output: f('ten.mp4'), size: 512 });
    expect(r.frames).toBe(250);
  }, 120_000);

  it('refuses bad parameters and undecodable inputs with their codes', async () => {
    const base = { image: f('face.png'), audio: f('speech.wav'), output: f('x.mp4') };
    await expectSonicError(renderPreview({ ...base, size: 255 }), 'PARAMS_OUT_OF_RANGE');
    await expectSonicError(renderPreview({ ...base, size: 256, fps: 0 }), 'PARAMS_OUT_OF_RANGE');
    await expectSonicError(renderPreview({ ...base, size: 256, audio: f('face.png') }), 'AUDIO_DECODE_FAILED');
    await expectSonicError(renderPreview({ ...base, size: 256, image: f('speech.wav') }), 'IMAGE_DECODE_FAILED');
  });

  it('reports an encoder that cannot write its output as a retryable ENCODE_FAILED', async () => {
    const err = await expectSonicError(
      renderPreview({ image: f('face.png'), audio: f('speech.wav'), output: f('missing-dir/out.mp4'), size: 128 }),
      'ENCODE_FAILED',
    );
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/ffmpeg exited with code \d+: .*missing-dir/);
  });

  it('stops and rejects with the abort reason when aborted mid-render', async () => {
    const ac = new AbortController();
    const reason = new SonicError('SHUTDOWN', 'partition revoked');
    const run = renderPreview({
      image: f('face.png'),
      audio: f('speech.wav'),
      output: f('aborted.mp4'),
      size: 256,
      signal: ac.signal,
      onProgress: (p) => {
        if (p > 0.2) ac.abort(reason);
      },
    });
    await expect(run).rejects.toBe(reason);
  });
});
