// @ts-check
/**
 * This participant's microphone and camera: asking for them, the device pickers (and the
 * speaker's, where the browser can play to a chosen output), switching device, turning each on
 * or off. Nothing about the call: what to send goes out through the
 * `onSend` it is given, and the page redraws itself after each change.
 */
import { t } from "./i18n.js";

const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };

/**
 * @typedef {"audio" | "video"} Kind
 * @typedef {"missing" | "denied" | "camera_unavailable" | "microphone_unavailable"} DeviceProblem
 *   what {@link Devices#start} could not have: no device at all, access refused, or one of the two
 */

/**
 * @param {Kind} kind
 * @param {string | undefined} deviceId
 * @returns {Promise<MediaStreamTrack | null>}
 */
async function acquire(kind, deviceId) {
  /** @type {MediaTrackConstraints} */
  const base = kind === "video" ? { ...VIDEO_CONSTRAINTS } : { echoCancellation: true, noiseSuppression: true };
  if (deviceId) base.deviceId = { exact: deviceId };
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: base });
  return stream.getTracks()[0] ?? null;
}

export class Devices {
  /** @type {{audio: HTMLSelectElement[], video: HTMLSelectElement[], output?: HTMLSelectElement[]}} */
  #pickers;
  /** @type {(kind: Kind, track: MediaStreamTrack | null) => Promise<void> | void} */
  #onSend;

  /**
   * @param {{audio: HTMLSelectElement[], video: HTMLSelectElement[], output?: HTMLSelectElement[]}} pickers the
   *   `<select>`s that list each kind; those of `output` (the speakers) are in a `<label>` that is
   *   hidden where no output can be chosen
   * @param {(kind: Kind, track: MediaStreamTrack | null) => Promise<void> | void} onSend what to send of this kind changed
   */
  constructor(pickers, onSend) {
    this.#pickers = pickers;
    this.#onSend = onSend;
    /** @type {MediaStreamTrack | null} the microphone's track, kept while muted */
    this.audio = null;
    /** @type {MediaStreamTrack | null} the camera's track; stopped and dropped while off, so its light goes out */
    this.video = null;
    this.micOn = true;
    this.camOn = true;
    /** @type {string | undefined} */
    this.micDevice = undefined;
    /** @type {string | undefined} */
    this.camDevice = undefined;
    /** @type {string | undefined} the speaker chosen (an `audiooutput` device id); the system's by default */
    this.speaker = undefined;
  }

  /** Whether this browser plays sound to a chosen output (`HTMLMediaElement.setSinkId`). */
  static get canChooseSpeaker() {
    return "setSinkId" in HTMLMediaElement.prototype;
  }

  /**
   * The track to send of `kind`: null while it is off.
   * @param {Kind} kind
   */
  sending(kind) {
    return kind === "audio" ? (this.micOn ? this.audio : null) : this.camOn ? this.video : null;
  }

  /**
   * Ask for the camera and microphone; fall back to one of them, or to listening only.
   * @returns {Promise<DeviceProblem | null>}
   */
  async start() {
    if (!navigator.mediaDevices?.getUserMedia) return "missing";
    /** @type {DeviceProblem | null} */
    let problem = null;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: VIDEO_CONSTRAINTS });
      this.audio = stream.getAudioTracks()[0] ?? null;
      this.video = stream.getVideoTracks()[0] ?? null;
    } catch (error) {
      const denied = error instanceof DOMException && error.name === "NotAllowedError";
      this.audio = await acquire("audio", undefined).catch(() => null);
      this.video = await acquire("video", undefined).catch(() => null);
      if (!this.audio && !this.video) problem = denied ? "denied" : "missing";
    }
    if (this.audio && !this.video) problem = "camera_unavailable";
    if (!this.audio && this.video) problem = "microphone_unavailable";
    this.micOn = this.audio !== null;
    this.camOn = this.video !== null;
    this.micDevice = this.audio?.getSettings().deviceId;
    this.camDevice = this.video?.getSettings().deviceId;
    // Not waited for: Firefox answers enumerateDevices only once the window has focus (a page
    // opened in a window behind another waited for ever), and joining needs no picker.
    void this.fillPickers();
    return problem;
  }

  /** List the devices in the pickers (with names once access is granted), the current one selected. */
  async fillPickers() {
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    for (const kind of /** @type {Kind[]} */ (["audio", "video"])) {
      const selected = kind === "audio" ? this.micDevice : this.camDevice;
      const found = devices.filter((d) => d.kind === `${kind}input` && d.deviceId);
      const generic = t(kind === "audio" ? "devices.microphone" : "devices.camera");
      for (const select of this.#pickers[kind]) {
        select.replaceChildren(
          ...found.map((d, i) => new Option(d.label || `${generic} ${i + 1}`, d.deviceId, false, d.deviceId === selected)),
        );
        if (found.length === 0) select.replaceChildren(new Option(t("devices.none"), ""));
        select.disabled = found.length === 0;
      }
    }
    // Speakers are listed where they can be chosen; elsewhere (Firefox without its preference,
    // Safari) the row is hidden rather than offering a choice that does nothing.
    const outputs = Devices.canChooseSpeaker ? devices.filter((d) => d.kind === "audiooutput" && d.deviceId) : [];
    for (const select of this.#pickers.output ?? []) {
      const generic = t("devices.speaker");
      select.replaceChildren(
        ...outputs.map((d, i) => new Option(d.label || `${generic} ${i + 1}`, d.deviceId, false, d.deviceId === this.speaker)),
      );
      const row = select.closest("label");
      if (row) row.hidden = outputs.length === 0;
    }
  }

  /**
   * Switch to another device, for the preview and the call.
   * @param {Kind} kind
   * @param {string} deviceId
   * @returns {Promise<boolean>} whether the track changed
   */
  async switchTo(kind, deviceId) {
    if (!deviceId) return false;
    if (kind === "audio") this.micDevice = deviceId;
    else this.camDevice = deviceId;
    // Off: the choice applies when it is turned on again.
    if (!(kind === "audio" ? this.micOn : this.camOn)) return false;
    const track = await acquire(kind, deviceId).catch(() => null);
    if (!track) return false;
    const old = this[kind];
    this[kind] = track;
    await this.#onSend(kind, track);
    old?.stop();
    await this.fillPickers();
    return true;
  }

  /**
   * Turn the microphone or camera on or off. Off means nothing is sent (and the camera light
   * goes out).
   * @param {Kind} kind
   */
  async toggle(kind) {
    if (kind === "audio") {
      this.micOn = !this.micOn;
      if (this.micOn && !this.audio) this.audio = await acquire("audio", this.micDevice).catch(() => null);
      this.micOn = this.micOn && this.audio !== null;
    } else {
      this.camOn = !this.camOn;
      if (this.camOn) {
        this.video = await acquire("video", this.camDevice).catch(() => null);
        this.camOn = this.video !== null;
      } else {
        this.video?.stop();
        this.video = null;
      }
    }
    await this.#onSend(kind, this.sending(kind));
  }

  /**
   * Stop the microphone and camera (the participation ended): every track ends, so the
   * camera light goes out and the browser shows no capture; {@link start} asks again.
   */
  stopAll() {
    this.audio?.stop();
    this.video?.stop();
    this.audio = null;
    this.video = null;
  }

  /**
   * Turn one off because a moderator did (the server already stopped forwarding it).
   * @param {Kind} kind
   * @returns {boolean} whether it was on
   */
  turnOff(kind) {
    if (kind === "audio") {
      if (!this.micOn) return false;
      this.micOn = false;
    } else {
      if (!this.camOn) return false;
      this.camOn = false;
      this.video?.stop();
      this.video = null;
    }
    this.#onSend(kind, null);
    return true;
  }
}
