// @ts-check
/**
 * The call's picture: one tile per participant in the grid (video, sound, name, indicators,
 * reactions), the active speaker, and the stage that shows a shared screen large above them;
 * the speaker every remote sound plays to, and the picture-in-picture window, which follows
 * the active speaker. It draws what it is given; the connection's callbacks feed it from app.js.
 */
import { byId, find } from "./dom.js";
import { t } from "./i18n.js";
import { reactionIcon, reactionName } from "./reactions.js";
import { GridLayout } from "./grid.js";
import { ViewReporter } from "./view.js";

/**
 * @typedef {import("./connection.js").ParticipantInfo} ParticipantInfo
 * @typedef {import("./connection.js").Source} Source
 * @typedef {{tile: HTMLElement, stream: MediaStream}} Tile
 * @typedef {import("./protocol.gen.js").ShownTile} ShownTile
 */

/** A raised hand, drawn as a line icon. */
const HAND = "M8 13V5a1.5 1.5 0 0 1 3 0v6M11 11V3.5a1.5 1.5 0 0 1 3 0V11M14 11V5a1.5 1.5 0 0 1 3 0v8c0 4-2.5 7-6 7s-5-2-6.5-4.5L3 12a1.4 1.4 0 0 1 2.3-1.6L8 13";

/** How long a reaction stays on a tile, in milliseconds. */
const REACTION_MS = 3000;

export class Tiles {
  /** @type {Map<string, Tile>} by participant id */
  #tiles = new Map();
  /** @type {Map<string, MediaStream>} shared screens, by participant id */
  #screens = new Map();
  /** @type {Map<string, ParticipantInfo>} as last rendered */
  #participants = new Map();
  /** @type {string | null} */
  #speaker = null;
  /** @type {() => string | null} */
  #me;
  #meeting = byId("meeting", HTMLElement);
  #grid = byId("grid", HTMLElement);
  #template = byId("tile-template", HTMLTemplateElement);
  #stage = byId("stage", HTMLElement);
  #stageVideo = byId("stage-video", HTMLVideoElement);
  #stageCaption = byId("stage-caption", HTMLElement);

  /** @type {() => void} */
  #onAutoplayBlocked;
  /** the audio output every remote sound plays to ("": the system's default) */
  #sinkId = "";
  /** @type {ViewReporter} which remote videos are on screen, for the server */
  view;

  /**
   * @param {() => string | null} me this participant's id, once known
   * @param {() => void} onAutoplayBlocked the browser refused to play someone's sound until a click
   * @param {(tiles: ShownTile[]) => void} onView the remote videos on screen changed (`view`)
   */
  constructor(me, onAutoplayBlocked, onView) {
    this.#me = me;
    this.#onAutoplayBlocked = onAutoplayBlocked;
    this.view = new ViewReporter(onView);
    /** which tiles are on the page shown, and how large */
    this.layout = new GridLayout(this.#grid, me, () => this.view.schedule());
    this.#stage.dataset.source = "screen";
    this.view.watch(this.#stage);
    const stageFull = fullscreenButton(this.#stage, "screen.fullscreen");
    this.#stage.append(stageFull);
    /** @type {MediaStreamTrack | null} this participant's own shared screen, shown on the stage */
    this.ownScreen = null;
    /** @type {MediaStream} what this participant's own tile shows */
    this.ownVideo = new MediaStream();
  }

  /**
   * Show `stream` on this participant's own tile (muted, never played back).
   * @param {MediaStream} stream
   */
  showOwn(stream) {
    this.ownVideo = stream;
    const me = this.#me();
    const entry = me ? this.#tiles.get(me) : undefined;
    if (entry) find(entry.tile, "video", HTMLVideoElement).srcObject = stream;
  }

  /**
   * The tile of a participant, made on first use.
   * @param {string} participantId
   * @returns {Tile}
   */
  tileFor(participantId) {
    let entry = this.#tiles.get(participantId);
    if (entry) return entry;
    const tile = this.#template.content.firstElementChild?.cloneNode(true);
    if (!(tile instanceof HTMLElement)) throw new TypeError("#tile-template holds no element");
    tile.dataset.participantId = participantId;
    const initials = document.createElement("span");
    initials.className = "initials";
    initials.setAttribute("aria-hidden", "true");
    const tools = document.createElement("div");
    tools.className = "tile-tools";
    const pin = document.createElement("button");
    pin.type = "button";
    pin.className = "tile-button tile-pin";
    pin.append(icon("M9 3h6l-1 6 3 3H7l3-3zM12 12v9"));
    pin.addEventListener("click", () => {
      this.layout.pinned = this.layout.pinned === participantId ? null : participantId;
      this.render(this.#participants);
    });
    tools.append(pin, fullscreenButton(tile, "tile.fullscreen"));
    tile.prepend(initials);
    tile.append(tools);
    const stream = new MediaStream();
    const isMe = participantId === this.#me();
    const video = find(tile, "video", HTMLVideoElement);
    const audio = find(tile, "audio", HTMLAudioElement);
    if (isMe) {
      tile.classList.add("me");
      audio.remove();
      video.srcObject = this.ownVideo;
    } else {
      video.srcObject = stream;
      audio.srcObject = stream;
      // The chosen speaker, once the element plays: Chromium aborts a choice made before.
      audio.addEventListener("playing", () => {
        if (this.#sinkId && audio.sinkId !== this.#sinkId) audio.setSinkId(this.#sinkId).catch(() => {});
      });
    }
    entry = { tile, stream };
    this.#tiles.set(participantId, entry);
    this.#grid.append(tile);
    if (!isMe) this.view.watch(tile);
    return entry;
  }

  /**
   * Draw everyone's tile from the roster (new tiles for newcomers, none for those gone) and the
   * stage.
   * @param {Map<string, ParticipantInfo>} participants
   */
  render(participants) {
    this.#participants = participants;
    const hands = [...participants.values()]
      .filter((p) => p.hand_raised_at)
      .sort((a, b) => (a.hand_raised_at ?? 0) - (b.hand_raised_at ?? 0))
      .map((p) => p.id);
    for (const [id, entry] of this.#tiles) {
      if (!participants.has(id)) {
        this.view.unwatch(entry.tile);
        entry.tile.remove();
        this.#tiles.delete(id);
      }
    }
    for (const p of participants.values()) {
      const { tile } = this.tileFor(p.id);
      const isMe = p.id === this.#me();
      find(tile, ".name", HTMLElement).textContent = isMe ? `${p.name} (${t("meeting.you")})` : p.name;
      find(tile, ".initials", HTMLElement).textContent = initialsOf(p.name);
      const pin = find(tile, ".tile-pin", HTMLButtonElement);
      const pinned = this.layout.pinned === p.id;
      pin.hidden = isMe;
      pin.setAttribute("aria-pressed", String(pinned));
      pin.setAttribute("aria-label", pinned ? t("tile.unpin", { name: p.name }) : t("tile.pin", { name: p.name }));
      pin.title = pin.getAttribute("aria-label") ?? "";
      const micOff = find(tile, ".mic-off", HTMLElement);
      micOff.hidden = p.audio;
      micOff.textContent = t("tile.mic_off");
      const camOff = find(tile, ".cam-off", HTMLElement);
      camOff.hidden = p.video;
      camOff.textContent = t("tile.cam_off");
      this.#markVideo(p.id);
      const away = find(tile, ".away", HTMLElement);
      away.hidden = !p.reconnecting;
      away.textContent = t("tile.reconnecting");
      tile.classList.toggle("reconnecting", Boolean(p.reconnecting));
      tile.classList.toggle("speaking", p.id === this.#speaker);
      const hand = find(tile, ".hand-badge", HTMLElement);
      hand.hidden = !p.hand_raised_at;
      const place = hands.indexOf(p.id) + 1;
      if (place > 0) {
        hand.replaceChildren(icon(HAND), document.createTextNode(String(place)));
        hand.setAttribute("aria-label", t("people.hand_number", { number: String(place) }));
      }
      tile.dataset.audio = String(p.audio);
      tile.dataset.video = String(p.video);
      tile.dataset.role = p.role;
    }
    this.layout.arrange(new Map([...this.#tiles].map(([id, entry]) => [id, entry.tile])));
    this.renderStage();
  }

  /** Show the shared screen, if anyone shares one, large above the tiles. */
  renderStage() {
    const sharer = [...this.#participants.values()].find((p) => p.screen);
    const isMe = sharer !== undefined && sharer.id === this.#me();
    const stream = isMe && this.ownScreen ? new MediaStream([this.ownScreen]) : sharer ? this.#screens.get(sharer.id) : undefined;
    this.#stage.hidden = !sharer || !stream;
    const owner = sharer && !isMe ? sharer.id : "";
    if (this.#stage.dataset.participantId !== owner) {
      this.#stage.dataset.participantId = owner;
      this.view.schedule();
    }
    this.#meeting.classList.toggle("has-screen", !this.#stage.hidden);
    if (sharer && stream && this.#stageVideo.srcObject !== stream) this.#stageVideo.srcObject = stream;
    if (!sharer) this.#stageVideo.srcObject = null;
    this.#stageCaption.textContent = sharer ? t("screen.of", { name: sharer.name }) : "";
  }

  /**
   * A remote track arrived: a camera or microphone goes to its owner's tile, a screen to the stage.
   * @param {string} participantId
   * @param {MediaStreamTrack} track
   * @param {Source} source
   */
  addTrack(participantId, track, source) {
    if (source === "screen") {
      this.#screens.set(participantId, new MediaStream([track]));
      this.renderStage();
      return;
    }
    const { tile, stream } = this.tileFor(participantId);
    for (const old of stream.getTracks()) if (old.kind === track.kind) stream.removeTrack(old);
    stream.addTrack(track);
    this.#markVideo(participantId);
    if (track.kind === "audio") {
      find(tile, "audio", HTMLAudioElement)
        .play()
        .catch((/** @type {unknown} */ error) => {
          // Only a refusal by the autoplay policy needs the user; other rejections are transient.
          if (error instanceof DOMException && error.name === "NotAllowedError") this.#onAutoplayBlocked();
        });
    }
  }

  /**
   * A remote track went away.
   * @param {string} participantId
   * @param {MediaStreamTrack} track
   */
  removeTrack(participantId, track) {
    this.#tiles.get(participantId)?.stream.removeTrack(track);
    this.#markVideo(participantId);
  }

  /**
   * Show a tile's initials instead of its video when the camera is off, or when no video comes
   * from that participant at all (someone who joined without a camera): never a black box.
   * @param {string} participantId
   */
  #markVideo(participantId) {
    const entry = this.#tiles.get(participantId);
    if (!entry) return;
    const on = this.#participants.get(participantId)?.video ?? false;
    const isMe = participantId === this.#me();
    entry.tile.classList.toggle("no-video", !on || (!isMe && entry.stream.getVideoTracks().length === 0));
  }

  /**
   * Play every remote sound, now and to come, to the speaker `sinkId` (an `audiooutput` device
   * id; "" for the system's default).
   * @param {string} sinkId
   * @returns {Promise<boolean>} whether every sound playing now plays there (one not playing yet
   *   is moved when it starts)
   */
  async setSink(sinkId) {
    this.#sinkId = sinkId;
    const elements = [...this.#grid.querySelectorAll("audio")];
    const results = await Promise.allSettled(elements.map((audio) => audio.setSinkId(sinkId)));
    return results.every((result, i) => result.status === "fulfilled" || elements[i]?.paused);
  }

  /**
   * Open picture-in-picture on the active speaker's video (or, with nobody speaking, the first
   * other participant's), or close it. While it is open it follows the active speaker.
   * @returns {Promise<"opened" | "closed" | "nobody">} nobody: no other participant shows video
   */
  async togglePictureInPicture() {
    if (document.pictureInPictureElement) {
      await document.exitPictureInPicture();
      return "closed";
    }
    const video = this.#speakerVideo();
    if (!video) return "nobody";
    await video.requestPictureInPicture();
    return "opened";
  }

  /**
   * The video picture-in-picture shows: the active speaker's when it has one, else another
   * participant's with video.
   * @returns {HTMLVideoElement | null}
   */
  #speakerVideo() {
    for (const id of [this.#speaker, ...this.#tiles.keys()]) {
      const video = this.#videoOf(id);
      if (video) return video;
    }
    return null;
  }

  /**
   * Another participant's video, if it shows a picture (camera on, frames known).
   * @param {string | null} participantId
   * @returns {HTMLVideoElement | null}
   */
  #videoOf(participantId) {
    const entry = participantId && participantId !== this.#me() ? this.#tiles.get(participantId) : undefined;
    if (!entry || entry.tile.classList.contains("no-video") || entry.stream.getVideoTracks().length === 0) return null;
    const video = find(entry.tile, "video", HTMLVideoElement);
    return video.readyState > 0 ? video : null;
  }

  /** Play every participant's sound (after a click, which the autoplay policy asks for). */
  playAll() {
    for (const audio of this.#grid.querySelectorAll("audio")) audio.play().catch(() => {});
  }

  /**
   * Mark who is speaking (or nobody).
   * @param {string | null} participantId
   */
  setSpeaker(participantId) {
    this.#speaker = participantId;
    for (const [id, { tile }] of this.#tiles) tile.classList.toggle("speaking", id === participantId);
    this.layout.setSpeaker(participantId);
    // An open picture-in-picture window moves to the new speaker, if the speaker shows a
    // picture (no click is needed while it is open).
    const shown = document.pictureInPictureElement;
    const next = shown ? this.#videoOf(participantId) : null;
    if (next && next !== shown) next.requestPictureInPicture().catch(() => {});
  }

  /**
   * Show a reaction on someone's tile for a few seconds.
   * @param {string} participantId
   * @param {string} emoji
   */
  showReaction(participantId, emoji) {
    const tile = this.#tiles.get(participantId)?.tile;
    if (!tile) return;
    const badge = find(tile, ".reaction", HTMLElement);
    // An icon, not the emoji (which needs a font many systems lack), and its name for screen readers.
    const name = document.createElement("span");
    name.className = "visually-hidden";
    name.textContent = reactionName(emoji);
    const shown = reactionIcon(emoji);
    badge.replaceChildren(shown, name);
    setTimeout(() => {
      if (badge.firstChild === shown) badge.replaceChildren();
    }, REACTION_MS);
  }

  /**
   * The speaker view: the active speaker large, the others small.
   * @param {boolean} on
   */
  speakerView(on) {
    this.layout.speakerView = on;
    this.layout.arrange(new Map([...this.#tiles].map(([id, entry]) => [id, entry.tile])));
  }

  /** Forget every tile and screen (the call ended). */
  clear() {
    for (const { tile } of this.#tiles.values()) {
      this.view.unwatch(tile);
      tile.remove();
    }
    this.#tiles.clear();
    this.#screens.clear();
    this.#participants = new Map();
    this.ownScreen = null;
    this.layout.pinned = null;
    this.layout.arrange(new Map());
    this.renderStage();
  }
}

/**
 * Up to two letters standing for `name` on a tile without video.
 * @param {string} name
 * @returns {string}
 */
export function initialsOf(name) {
  const words = name.trim().split(/\s+/u).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  return letters.map((word) => [...word][0] ?? "").join("").toLocaleUpperCase();
}

/**
 * A button that shows `element` full screen (and back); double-clicking `element` does too.
 * @param {HTMLElement} element
 * @param {string} label the key of its accessible name
 * @returns {HTMLButtonElement}
 */
function fullscreenButton(element, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile-button tile-fullscreen";
  button.append(icon("M3 9V3h6M15 3h6v6M21 15v6h-6M9 21H3v-6"));
  button.setAttribute("aria-label", t(label));
  button.title = t(label);
  const toggle = () => {
    if (document.fullscreenElement === element) document.exitFullscreen().catch(() => {});
    else element.requestFullscreen?.().catch(() => {});
  };
  button.addEventListener("click", toggle);
  element.addEventListener("dblclick", toggle);
  return button;
}

/**
 * A line icon (24 by 24, drawn in the text's colour), hidden from screen readers: the button
 * holding it has the name.
 * @param {string} path SVG path data
 * @returns {SVGSVGElement}
 */
function icon(path) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const line = document.createElementNS(ns, "path");
  line.setAttribute("d", path);
  svg.append(line);
  return svg;
}
