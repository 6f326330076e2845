import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makePortrait } from '../../src/media/samples.js';
import { ROOT } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

/** Durations of the container and of each stream of a video, measured by ffprobe. */
function durations(path: string): { format: number; video: number; audio: number } {
  const out = JSON.parse(
    execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration:stream=codec_type,duration', '-of', 'json', path]).toString(),
  ) as {
    format: { duration: string };
    streams: { codec_type: string; duration: string }[];
  };
  const of = (t: string): number => Number(out.streams.find((s) => s.codec_type === t)?.duration);
  return { format: Number(out.format.duration), video: of('video'), audio: of('audio') };
}

/** Task scratch directories left under a stage process's scratch root (its process directories are expected). */
function leftoverTaskDirs(root: string): string[] {
  return readdirSync(root).flatMap((p) => readdirSync(join(root, p)).map((t) => `${p}/${t}`));
}

describe('truncate_audio: the cut speech flows to infer and encode (real pipeline)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-truncate-'));
  const scratch = { builtin: join(dir, 'scratch-builtin'), command: join(dir, 'scratch-command') };
  let pipelines: Record<'builtin' | 'command', Pipeline>;
  let long: Buffer;
  let face: Buffer;

  afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 3 }));

  beforeAll(async () => {
    // ten minutes of speech-band noise at 8 kb/s: a small upload that decodes to a lot of audio
    execFileSync('ffmpeg', [
      '-nostdin',
      '-v',
      'error',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'anoisesrc=d=600:a=0.2:r=8000',
      '-ac',
      '1',
      '-c:a',
      'libmp3lame',
      '-b:a',
      '8k',
      join(dir, 'long.mp3'),
    ]);
    await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
    long = readFileSync(join(dir, 'long.mp3'));
    face = readFileSync(join(dir, 'face.png'));
    const [builtin, command] = await Promise.all([
      startPipeline({ SONIC_SCRATCH_DIR: scratch.builtin }),
      startPipeline({
        SONIC_SCRATCH_DIR: scratch.command,
        SONIC_INFER_BACKEND: 'command',
        SONIC_INFER_COMMAND: `${process.execPath} ${join(ROOT, 'test/fixtures/fake-sonic.mjs')} {image} {audio} {output} --inference_steps {inference_steps} --attempt {attempt}`,
      }),
    ]);
    pipelines = { builtin: builtin, command: command };
  }, 180_000);

  it.each(['builtin', 'command'] as const)(
    '%s backend: ten minutes cut to 4 s end SUCCEEDED with a 4 s video',
    async (backend) => {
      const p = pipelines[backend];
      expect(long.length).toBeLessThan(700_000);
      const r = await p.submit({
        audio: { data: long, name: 'long.mp3' },
        image: { data: face, name: 'face.png' },
        truncate_audio: 'true',
        max_duration_s: '4',
        min_resolution: '256',
      });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      const id = String(r.body.task_id);
      const s = await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 120_000);
      expect(s.state, JSON.stringify(s)).toBe('SUCCEEDED');
      const res = await fetch(String(s.video_url));
      expect(res.status).toBe(200);
      const video = join(dir, `${backend}.mp4`);
      writeFileSync(video, Buffer.from(await res.arrayBuffer()));
      const d = durations(video);
      expect(d.format).toBeGreaterThan(3.8);
      expect(d.format).toBeLessThan(4.2);
      expect(Math.abs(d.video - 4)).toBeLessThan(0.2);
      expect(Math.abs(d.audio - 4)).toBeLessThan(0.2);
      expect(leftoverTaskDirs(scratch[backend])).toEqual([]);
    },
    150_000,
  );

  it('without truncate_audio the same upload fails AUDIO_TOO_LONG with a client-safe message', async () => {
    const p = pipelines.builtin;
    const r = await p.submit({ audio: { data: long, name: 'long.mp3' }, image: { data: face, name: 'face.png' }, max_duration_s: '4' });
    const s = await p.waitFor(String(r.body.task_id));
    expect(s.state).toBe('FAILED');
    expect(s.error).toMatchObject({ code: 'AUDIO_TOO_LONG', retryable: false });
    expect(String((s.error as { message: string }).message)).toMatch(/^the audio is 6\d\d\.\d\d s; at most 4 s is allowed$/);
    expect(leftoverTaskDirs(scratch.builtin)).toEqual([]);
  }, 120_000);
});
