// @ts-check
/**
 * A short sound that tells a moderator something needs them (someone waits in the lobby,
 * raises a hand, or writes while the chat is closed), for when the eyes are elsewhere. It is
 * made here with WebAudio, so no sound file is fetched; the person may turn it off, and the
 * choice is remembered in this browser.
 */

const STORAGE_KEY = "veche.cue_sound";
/** The chime's two notes (Hz) and how long each sounds (s). */
const NOTES = [660, 880];
const NOTE = 0.12;
/** Its loudness (0..1): noticeable, never startling. */
const VOLUME = 0.08;

export class CueSound {
  /** @type {AudioContext | null} made on the first chime, kept for the next */
  #context = null;
  #checkbox;

  /** @param {HTMLInputElement} checkbox the setting: sound on (checked, the default) or off */
  constructor(checkbox) {
    this.#checkbox = checkbox;
    try {
      checkbox.checked = localStorage.getItem(STORAGE_KEY) !== "off";
    } catch {
      checkbox.checked = true;
    }
    checkbox.addEventListener("change", () => {
      try {
        localStorage.setItem(STORAGE_KEY, checkbox.checked ? "on" : "off");
      } catch {
        // not saved: the choice lasts for this page
      }
    });
  }

  /** Whether the sound is on. */
  get on() {
    return this.#checkbox.checked;
  }

  /** Play the chime, if the sound is on. */
  play() {
    if (!this.on || typeof AudioContext === "undefined") return;
    const context = (this.#context ??= new AudioContext());
    context.resume().catch(() => {});
    const start = context.currentTime + 0.01;
    for (const [index, frequency] of NOTES.entries()) {
      const at = start + index * NOTE;
      const tone = context.createOscillator();
      tone.type = "sine";
      tone.frequency.value = frequency;
      const gain = context.createGain();
      // A soft attack and release: a bare sine switched on and off clicks.
      gain.gain.setValueAtTime(0, at);
      gain.gain.linearRampToValueAtTime(VOLUME, at + 0.015);
      gain.gain.linearRampToValueAtTime(0, at + NOTE);
      tone.connect(gain).connect(context.destination);
      tone.start(at);
      tone.stop(at + NOTE);
    }
  }
}
