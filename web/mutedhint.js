// @ts-check
/**
 * "You are muted": notices that this participant speaks while the microphone is off, from the
 * level of the local microphone track (kept while muted, see devices.js), measured here with a
 * WebAudio analyser; nothing is sent. Speech is taken to be sound above {@link LOUD} whose
 * pauses are shorter than {@link PAUSE}, lasting {@link SPEECH}; a single knock is not.
 */

/** Milliseconds between two measurements. */
const TICK = 100;
/** RMS level (of full scale) taken as a voice near the microphone: about -34 dBFS. */
const LOUD = 0.02;
/** A quieter stretch shorter than this (ms) is a pause within speech, not its end. */
const PAUSE = 600;
/** Milliseconds of speech before the hint. */
const SPEECH = 500;
/** Least milliseconds between two hints: a reminder, not a nag. */
const EVERY = 30000;

export class MutedHint {
  /** @type {AudioContext | null} */
  #context = null;
  /** @type {MediaStreamAudioSourceNode | null} */
  #source = null;
  /** @type {AnalyserNode | null} */
  #analyser = null;
  /** @type {MediaStreamTrack | null} */
  #track = null;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #timer = undefined;
  /** @type {number | null} when the current stretch of speech began */
  #began = null;
  #lastLoud = -Infinity;
  #lastHint = -Infinity;
  #onSpeaking;

  /** @param {() => void} onSpeaking called when someone speaks into the muted microphone */
  constructor(onSpeaking) {
    this.#onSpeaking = onSpeaking;
  }

  /**
   * Listen to `track` (the muted microphone), or to nothing (null: unmuted, or not in a call).
   * @param {MediaStreamTrack | null} track
   */
  watch(track) {
    if (track === this.#track) return;
    this.#track = track;
    this.#source?.disconnect();
    this.#source = null;
    clearInterval(this.#timer);
    this.#began = null;
    if (!track || typeof AudioContext === "undefined") return;
    const context = (this.#context ??= new AudioContext());
    context.resume().catch(() => {});
    this.#analyser ??= Object.assign(context.createAnalyser(), { fftSize: 4096 });
    this.#source = context.createMediaStreamSource(new MediaStream([track]));
    // Into the analyser only, never to the speakers.
    this.#source.connect(this.#analyser);
    const samples = new Float32Array(this.#analyser.fftSize);
    this.#timer = setInterval(() => this.#measure(samples), TICK);
  }

  /** @param {Float32Array<ArrayBuffer>} samples */
  #measure(samples) {
    if (!this.#analyser || this.#track?.readyState !== "live") return;
    this.#analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const sample of samples) sum += sample * sample;
    if (Math.sqrt(sum / samples.length) < LOUD) return;
    const now = performance.now();
    if (this.#began === null || now - this.#lastLoud > PAUSE) this.#began = now;
    this.#lastLoud = now;
    if (now - this.#began >= SPEECH && now - this.#lastHint >= EVERY) {
      this.#lastHint = now;
      this.#onSpeaking();
    }
  }
}
