// New task: a portrait and a recording (a file, or the microphone), the Sonic parameters with
// their ranges and defaults, submitted to the public API (POST /v1/tasks); then the task's page
// follows it live and plays the video.
import { useRef, useState } from 'preact/hooks';
import { postForm } from './api.js';
import { ErrorBox, html, navigate } from './ui.js';

const HELP = {
  min_resolution: 'shorter side of the output, pixels',
  expand_ratio: 'margin around the detected face',
  inference_steps: 'diffusion steps: quality against time',
  dynamic_scale: 'strength of the motion',
  motion_scale: 'amplitude of head motion',
  seed: 'empty: random',
  fps: 'frames per second',
};

/** 16-bit PCM WAV of decoded audio (mono mix): what the microphone recording is sent as. */
function wav(buffer) {
  const ch = buffer.numberOfChannels;
  const n = buffer.length;
  const out = new DataView(new ArrayBuffer(44 + n * 2));
  const text = (o, s) => [...s].forEach((c, i) => out.setUint8(o + i, c.charCodeAt(0)));
  text(0, 'RIFF');
  out.setUint32(4, 36 + n * 2, true);
  text(8, 'WAVEfmt ');
  out.setUint32(16, 16, true);
  out.setUint16(20, 1, true);
  out.setUint16(22, 1, true);
  out.setUint32(24, buffer.sampleRate, true);
  out.setUint32(28, buffer.sampleRate * 2, true);
  out.setUint16(32, 2, true);
  out.setUint16(34, 16, true);
  text(36, 'data');
  out.setUint32(40, n * 2, true);
  const data = [...Array(ch)].map((_, c) => buffer.getChannelData(c));
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const d of data) s += d[i];
    out.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s / ch)) * 0x7fff, true);
  }
  return new Blob([out], { type: 'audio/wav' });
}

function Recorder({ onRecorded }) {
  const rec = useRef(null);
  const [state, setState] = useState('idle');
  const start = async () => {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    const r = new MediaRecorder(media);
    r.ondataavailable = (e) => chunks.push(e.data);
    r.onstop = async () => {
      media.getTracks().forEach((t) => t.stop());
      // each AudioContext holds an audio device thread until closed (browsers allow only a few)
      const audio = new AudioContext();
      let decoded;
      try {
        decoded = await audio.decodeAudioData(await new Blob(chunks).arrayBuffer());
      } finally {
        void audio.close();
      }
      onRecorded(new File([wav(decoded)], 'recording.wav', { type: 'audio/wav' }));
      setState('done');
    };
    r.start();
    rec.current = r;
    setState('recording');
  };
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === 'undefined') return null;
  return state === 'recording'
    ? html`<button type="button" onClick=${() => rec.current.stop()}>Stop recording</button>`
    : html`<button type="button" onClick=${() => start().catch(() => setState('refused'))}>
          ${state === 'done' ? 'Record again' : 'Record from the microphone'}</button
        >${state === 'refused' ? ' (microphone refused)' : ''}`;
}

export function NewTask({ me }) {
  const { ranges, defaults } = me.params;
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [recorded, setRecorded] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    if (recorded && !(form.get('audio')?.size > 0)) form.set('audio', recorded);
    // empty fields take the defaults
    for (const [k, v] of [...form.entries()]) if (v === '') form.delete(k);
    setBusy(true);
    try {
      const r = await postForm('/v1/tasks', form);
      navigate(`/console/tasks/${r.task_id}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<h1>New task</h1>
    <form class="new-task" onSubmit=${submit}>
      <fieldset>
        <legend>Inputs</legend>
        <label>Portrait (JPEG, PNG, WebP) <input type="file" name="image" accept="image/*" required /></label>
        <label>Recording (WAV, MP3, M4A, FLAC, Ogg) <input type="file" name="audio" accept="audio/*" required=${!recorded} /></label>
        <${Recorder} onRecorded=${setRecorded} />${recorded ? html` <span class="muted">recorded ${Math.round(recorded.size / 1024)} KiB</span>` : null}
      </fieldset>
      <fieldset>
        <legend>Sonic parameters</legend>
        ${Object.entries(ranges).map(
          ([name, r]) =>
            html`<label
              >${name}
              <input type="number" name=${name} min=${r.min} max=${r.max} step=${r.step ?? (r.integer ? 1 : 0.05)} placeholder=${defaults[name] ?? ''} />
              <span class="muted">${r.min}–${r.max}${r.step ? `, step ${r.step}` : ''}; default ${defaults[name] ?? 'none'} — ${HELP[name] ?? ''}</span></label
            >`,
        )}
        <label><input type="checkbox" name="crop_to_face" value="false" /> do not crop to the face (default: crop)</label>
      </fieldset>
      <button type="submit" disabled=${busy}>${busy ? 'Submitting…' : 'Submit'}</button>
      <${ErrorBox} error=${error} />
    </form>`;
}
