import { describe, expect, it } from 'vitest';
import { CommandBackend } from '../../src/stages/backends/command.js';
import type { InferInput } from '../../src/stages/backends/types.js';
import { PARAM_DEFAULTS } from '../../src/domain/params.js';

const input = (over: Partial<InferInput> = {}): InferInput => ({
  taskId: '00000000-0000-4000-8000-000000000001',
  attempt: 1,
  imagePng: '/nonexistent/image.png',
  audio16k: '/nonexistent/audio.wav',
  audioOriginal: '/nonexistent/audio.flac',
  durationS: 1,
  params: PARAM_DEFAULTS,
  outputPath: '/nonexistent/out.mp4',
  workDir: '/tmp',
  signal: new AbortController().signal,
  onProgress: () => undefined,
  ...over,
});

describe('command backend', () => {
  it('holds a wrapper script to the inference budget, children included: INFERENCE_TIMEOUT on time', async () => {
    const backend = new CommandBackend(`sh -c "sleep 30 & sleep 30 & wait"`, { timeoutBaseS: 1, timeoutPerAudioS: 0 });
    const t0 = Date.now();
    await expect(backend.render(input())).rejects.toMatchObject({ code: 'INFERENCE_TIMEOUT' });
    expect(Date.now() - t0).toBeLessThan(4000);
  });

  it('reports progress parsed from the output and refuses a command that cannot start with CONFIG_INVALID', async () => {
    const seen: number[] = [];
    const backend = new CommandBackend(`sh -c "echo 'step 50%'; echo '75%' >&2; exit 3"`, { timeoutBaseS: 10, timeoutPerAudioS: 0 });
    await expect(backend.render(input({ onProgress: (f) => seen.push(f) }))).rejects.toMatchObject({ code: expect.any(String) });
    expect(seen).toEqual([0.5, 0.75]);
    await expect(new CommandBackend('/nonexistent/sonic-cli {image}', { timeoutBaseS: 1, timeoutPerAudioS: 0 }).render(input())).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
    });
  });
});
