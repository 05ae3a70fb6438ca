// @ts-check
/**
 * The room page: pre-join screen (name, preview, devices), the call grid, controls.
 * Signalling and peer connections live in connection.js; this file only drives the DOM.
 */
import { Connection } from "./connection.js";
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t, translatePage } from "./i18n.js";
import { ChatPanel, PeoplePanel } from "./panels.js";
import { CloseCode, ErrorCode } from "./protocol.gen.js";

const REACTIONS = /** @type {const} */ (["👍", "👏", "❤️", "😂", "😮", "🎉"]);

/** @typedef {import("./connection.js").ParticipantInfo} ParticipantInfo */

/**
 * @param {string} id
 * @returns {any}
 */
const byId = (id) => document.getElementById(id);

const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };

const room = decodeURIComponent(location.pathname.replace(/^\/r\//, ""));
const params = new URLSearchParams(location.search);
/** @type {HTMLElement} */ const prejoin = byId("prejoin");
/** @type {HTMLElement} */ const meeting = byId("meeting");
/** @type {HTMLElement} */ const grid = byId("grid");
/** @type {HTMLElement} */ const statusLine = byId("status");
/** @type {HTMLElement} */ const deviceNote = byId("device-note");
/** @type {HTMLVideoElement} */ const preview = byId("preview");
/** @type {HTMLInputElement} */ const nameInput = byId("display-name");
/** @type {HTMLButtonElement} */ const soundButton = byId("sound");
/** @type {HTMLTemplateElement} */ const tileTemplate = byId("tile-template");

const local = {
  /** @type {MediaStreamTrack | null} */ audio: null,
  /** @type {MediaStreamTrack | null} */ video: null,
  micOn: true,
  camOn: true,
  /** @type {string | undefined} */ micDevice: undefined,
  /** @type {string | undefined} */ camDevice: undefined,
};

/** @type {Connection | null} */
let connection = null;
const chat = new ChatPanel(() => connection);
const people = new PeoplePanel(() => connection);
/** @type {MediaStreamTrack | null} this participant's shared screen */
let screenTrack = null;
/** @type {Map<string, MediaStream>} shared screens by participant */
const screens = new Map();
/** @type {ParticipantInfo | undefined} this participant as the server last described it */
let serverMe;
/** @type {string | null} */
let activeSpeaker = null;
/** @type {Map<string, {tile: HTMLElement, stream: MediaStream}>} */
const tiles = new Map();
/** @type {[string, Record<string, string>] | null} */
let statusKey = null;
/** @type {string | null} */
let deviceNoteKey = null;

/**
 * Show a translated status line (kept so a language switch re-translates it).
 * @param {string | null} key
 * @param {Record<string, string>} [values]
 */
function setStatus(key, values = {}) {
  statusKey = key ? [key, values] : null;
  statusLine.textContent = key ? t(key, values) : "";
}

/** @param {string | null} key */
function setDeviceNote(key) {
  deviceNoteKey = key;
  deviceNote.textContent = key ? t(key) : "";
}

// ------------------------------------------------------------------ devices

/**
 * @param {"audio" | "video"} kind
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

/** Ask for the camera and microphone; fall back to one of them, or to listening only. */
async function acquireDevices() {
  if (!navigator.mediaDevices?.getUserMedia) {
    setDeviceNote("media.missing");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: VIDEO_CONSTRAINTS });
    local.audio = stream.getAudioTracks()[0] ?? null;
    local.video = stream.getVideoTracks()[0] ?? null;
  } catch (error) {
    const denied = error instanceof DOMException && error.name === "NotAllowedError";
    local.audio = await acquire("audio", undefined).catch(() => null);
    local.video = await acquire("video", undefined).catch(() => null);
    if (!local.audio && !local.video) setDeviceNote(denied ? "media.denied" : "media.missing");
  }
  if (local.audio && !local.video) setDeviceNote("media.camera_unavailable");
  if (!local.audio && local.video) setDeviceNote("media.microphone_unavailable");
  local.micOn = local.audio !== null;
  local.camOn = local.video !== null;
  local.micDevice = local.audio?.getSettings().deviceId;
  local.camDevice = local.video?.getSettings().deviceId;
  await fillDeviceLists();
}

async function fillDeviceLists() {
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  /** @type {[string, string, string | undefined][]} */
  const lists = [
    ["mic-select", "audioinput", local.micDevice],
    ["cam-select", "videoinput", local.camDevice],
    ["mic-select-call", "audioinput", local.micDevice],
    ["cam-select-call", "videoinput", local.camDevice],
  ];
  for (const [id, kind, selected] of lists) {
    /** @type {HTMLSelectElement} */
    const select = byId(id);
    const found = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren(
      ...found.map((d, i) => new Option(d.label || `${t(kind === "audioinput" ? "devices.microphone" : "devices.camera")} ${i + 1}`, d.deviceId, false, d.deviceId === selected)),
    );
    if (found.length === 0) select.replaceChildren(new Option(t("devices.none"), ""));
    select.disabled = found.length === 0;
  }
}

/**
 * Switch to another device, in the preview and in the call.
 * @param {"audio" | "video"} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
  if (!deviceId) return;
  const on = kind === "audio" ? local.micOn : local.camOn;
  if (kind === "audio") local.micDevice = deviceId;
  else local.camDevice = deviceId;
  if (!on) return;
  const track = await acquire(kind, deviceId).catch(() => null);
  if (!track) return;
  const old = local[kind];
  local[kind] = track;
  await connection?.replaceTrack(kind, track);
  old?.stop();
  renderLocal();
  await fillDeviceLists();
}

/**
 * Turn the microphone or camera on or off. Off means nothing is sent (and the camera light
 * goes out); the others see the indicator.
 * @param {"audio" | "video"} kind
 */
async function toggle(kind) {
  if (kind === "audio") {
    local.micOn = !local.micOn;
    if (local.micOn && !local.audio) local.audio = await acquire("audio", local.micDevice).catch(() => null);
    local.micOn = local.micOn && local.audio !== null;
    await connection?.replaceTrack("audio", local.micOn ? local.audio : null);
  } else {
    local.camOn = !local.camOn;
    if (local.camOn) {
      local.video = await acquire("video", local.camDevice).catch(() => null);
      local.camOn = local.video !== null;
    } else {
      local.video?.stop();
      local.video = null;
    }
    await connection?.replaceTrack("video", local.camOn ? local.video : null);
  }
  connection?.update({ audio: local.micOn, video: local.camOn });
  renderLocal();
}

/** Reflect the local state in the preview, own tile and toggle buttons. */
function renderLocal() {
  const stream = new MediaStream(local.camOn && local.video ? [local.video] : []);
  preview.srcObject = stream;
  byId("preview-off").hidden = local.camOn && local.video !== null;
  for (const id of ["prejoin-mic", "mic"]) byId(id).setAttribute("aria-pressed", String(local.micOn));
  for (const id of ["prejoin-cam", "cam"]) byId(id).setAttribute("aria-pressed", String(local.camOn));
  const me = connection?.participantId;
  const entry = me ? tiles.get(me) : undefined;
  if (entry) {
    const video = /** @type {HTMLVideoElement} */ (entry.tile.querySelector("video"));
    video.srcObject = stream;
  }
}

// ------------------------------------------------------------------ tiles

/**
 * @param {string} participantId
 * @returns {{tile: HTMLElement, stream: MediaStream}}
 */
function tileFor(participantId) {
  let entry = tiles.get(participantId);
  if (!entry) {
    const tile = /** @type {HTMLElement} */ (
      /** @type {DocumentFragment} */ (tileTemplate.content.cloneNode(true)).firstElementChild
    );
    tile.dataset.participantId = participantId;
    const stream = new MediaStream();
    const isMe = participantId === connection?.participantId;
    const video = /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
    const audio = /** @type {HTMLAudioElement} */ (tile.querySelector("audio"));
    if (isMe) {
      tile.classList.add("me");
      audio.remove();
    } else {
      video.srcObject = stream;
      audio.srcObject = stream;
    }
    entry = { tile, stream };
    tiles.set(participantId, entry);
    grid.append(tile);
    if (isMe) renderLocal();
  }
  return entry;
}

/** @param {Map<string, ParticipantInfo>} participants */
function renderRoster(participants) {
  for (const [id, entry] of tiles) {
    if (!participants.has(id)) {
      entry.tile.remove();
      tiles.delete(id);
    }
  }
  for (const p of participants.values()) {
    const { tile } = tileFor(p.id);
    const isMe = p.id === connection?.participantId;
    /** @type {HTMLElement} */ (tile.querySelector(".name")).textContent = isMe ? `${p.name} (${t("meeting.you")})` : p.name;
    const micOff = /** @type {HTMLElement} */ (tile.querySelector(".mic-off"));
    const camOff = /** @type {HTMLElement} */ (tile.querySelector(".cam-off"));
    micOff.hidden = p.audio;
    micOff.textContent = t("tile.mic_off");
    camOff.hidden = p.video;
    camOff.textContent = t("tile.cam_off");
    tile.classList.toggle("no-video", !p.video);
    const away = /** @type {HTMLElement} */ (tile.querySelector(".away"));
    away.hidden = !p.reconnecting;
    away.textContent = t("tile.reconnecting");
    tile.classList.toggle("reconnecting", Boolean(p.reconnecting));
    tile.classList.toggle("speaking", p.id === activeSpeaker);
    /** @type {HTMLElement} */ (tile.querySelector(".hand-badge")).hidden = !p.hand_raised_at;
    tile.dataset.audio = String(p.audio);
    tile.dataset.video = String(p.video);
    tile.dataset.role = p.role;
    if (isMe) followServer(p);
  }
  renderRecording();
  renderStage(participants);
  people.render();
}

/** Show whether the meeting is recorded, and the record button to moderators. */
function renderRecording() {
  const recording = Boolean(connection?.settings?.recording);
  byId("recording").hidden = !recording;
  /** @type {HTMLButtonElement} */ const button = byId("record");
  button.hidden = serverMe?.role !== "moderator";
  button.setAttribute("aria-pressed", String(recording));
}

/**
 * Follow what a moderator did to this participant: a mute or camera-off stops sending here too.
 * @param {ParticipantInfo} me
 */
function followServer(me) {
  const before = serverMe;
  serverMe = me;
  if (!before) return;
  if (before.audio && !me.audio && local.micOn) {
    local.micOn = false;
    connection?.replaceTrack("audio", null);
    setStatus("moderation.muted");
    renderLocal();
  }
  if (before.video && !me.video && local.camOn) {
    local.camOn = false;
    local.video?.stop();
    local.video = null;
    connection?.replaceTrack("video", null);
    setStatus("moderation.camera_off");
    renderLocal();
  }
  byId("hand").setAttribute("aria-pressed", String(Boolean(me.hand_raised_at)));
}

/**
 * Show the shared screen, if anyone shares one, large above the tiles.
 * @param {Map<string, ParticipantInfo>} participants
 */
function renderStage(participants) {
  const sharer = [...participants.values()].find((p) => p.screen);
  /** @type {HTMLElement} */ const stage = byId("stage");
  /** @type {HTMLVideoElement} */ const video = byId("stage-video");
  const isMe = sharer?.id === connection?.participantId;
  const stream = isMe && screenTrack ? new MediaStream([screenTrack]) : sharer ? screens.get(sharer.id) : undefined;
  stage.hidden = !sharer || !stream;
  meeting.classList.toggle("has-screen", !stage.hidden);
  if (sharer && stream && video.srcObject !== stream) video.srcObject = stream;
  if (!sharer) video.srcObject = null;
  byId("stage-caption").textContent = sharer ? t("screen.of", { name: sharer.name }) : "";
  byId("screen").setAttribute("aria-pressed", String(Boolean(screenTrack)));
}

/**
 * Show a reaction on someone's tile for a few seconds.
 * @param {string} participantId
 * @param {string} emoji
 */
function showReaction(participantId, emoji) {
  const badge = /** @type {HTMLElement | null} */ (tiles.get(participantId)?.tile.querySelector(".reaction") ?? null);
  if (!badge) return;
  badge.textContent = emoji;
  setTimeout(() => {
    if (badge.textContent === emoji) badge.textContent = "";
  }, 3000);
}

/** Start or stop sharing the screen. */
async function toggleScreen() {
  const conn = connection;
  if (!conn) return;
  if (screenTrack) {
    screenTrack.stop();
    screenTrack = null;
    await conn.stopScreen();
    renderStage(conn.participants);
    return;
  }
  /** @type {MediaStream} */
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch {
    setStatus("screen.failed");
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (!track) return;
  if (!(await conn.shareScreen(track))) {
    track.stop();
    setStatus("screen.busy");
    return;
  }
  screenTrack = track;
  // The browser's own "stop sharing" button ends the track.
  track.addEventListener("ended", () => {
    if (screenTrack === track) toggleScreen();
  });
  renderStage(conn.participants);
  // Stopped while the server was being asked: end the share now.
  if (track.readyState === "ended") await toggleScreen();
}

/**
 * @param {string} participantId
 * @param {MediaStreamTrack} track
 * @param {"microphone" | "camera" | "screen"} source
 */
function addRemoteTrack(participantId, track, source) {
  if (source === "screen") {
    screens.set(participantId, new MediaStream([track]));
    if (connection) renderStage(connection.participants);
    return;
  }
  const { tile, stream } = tileFor(participantId);
  for (const old of stream.getTracks()) if (old.kind === track.kind) stream.removeTrack(old);
  stream.addTrack(track);
  if (track.kind === "audio") {
    const audio = /** @type {HTMLAudioElement} */ (tile.querySelector("audio"));
    audio.play().catch((/** @type {unknown} */ error) => {
      // Only a refusal by the autoplay policy needs the user; other rejections are transient.
      if (error instanceof DOMException && error.name === "NotAllowedError") soundButton.hidden = false;
    });
  }
}

// ------------------------------------------------------------------ joining

/**
 * @param {string} name
 * @param {string} [password]
 */
function join(name, password) {
  try {
    localStorage.setItem("veche.name", name);
  } catch {
    // not saved; the form asks again next time
  }
  setStatus("status.connecting");
  const conn = new Connection(room, name, params.get("token"));
  connection = conn;
  conn.onWelcome = async (welcome) => {
    const returning = meeting.classList.contains("reconnecting");
    meeting.classList.remove("reconnecting");
    prejoin.hidden = true;
    meeting.hidden = false;
    serverMe = undefined;
    setStatus(!returning ? "status.joined" : welcome.resumed ? "status.reconnected" : "status.rejoined");
    chat.clear();
    for (const entry of welcome.chat ?? []) chat.add(entry, true);
    activeSpeaker = welcome.active_speaker ?? null;
    tileFor(/** @type {string} */ (conn.participantId));
    await conn.publish(local.micOn ? local.audio : null, local.camOn ? local.video : null);
    conn.update({ audio: local.micOn, video: local.camOn });
  };
  conn.onReconnecting = () => {
    meeting.classList.add("reconnecting");
    setStatus("status.reconnecting");
    // The shared screen went with the connection; share again once back.
    if (screenTrack) {
      screenTrack.stop();
      screenTrack = null;
      renderStage(conn.participants);
    }
  };
  conn.onRoster = renderRoster;
  conn.onTrack = addRemoteTrack;
  conn.onTrackRemoved = (participantId, track) => tiles.get(participantId)?.stream.removeTrack(track);
  conn.onTrackUnavailable = (participantId, source, codec) => {
    const values = { name: conn.participants.get(participantId)?.name ?? "?", codec: codec.replace(/^\w+\//, "") };
    if (source === "screen") setStatus("media.unavailable_screen", values);
    else if (source === "camera") setStatus("media.unavailable_camera", values);
    else setStatus("media.unavailable_microphone", values);
  };
  conn.onMediaState = (_role, state) => {
    if (state === "failed") setStatus("media.failed");
    else if (state === "connected" && statusKey?.[0] === "status.joined") setStatus("status.connected_media");
  };
  conn.onChat = (entry) => chat.add(entry);
  conn.onReaction = showReaction;
  conn.onActiveSpeaker = (participantId) => {
    activeSpeaker = participantId;
    for (const [id, { tile }] of tiles) tile.classList.toggle("speaking", id === participantId);
  };
  conn.onRoomUpdated = (settings) => {
    const was = !byId("recording").hidden;
    renderRecording();
    if (settings.recording !== was) setStatus(settings.recording ? "recording.started" : "recording.stopped");
    people.render();
  };
  conn.onLobby = (waiting) => {
    const grew = waiting.length > people.waiting.length;
    people.waiting = waiting;
    people.render();
    if (grew) setStatus("lobby.someone_waits", { count: String(waiting.length) });
  };
  conn.onWaiting = () => {
    prejoin.hidden = true;
    setStatus("lobby.waiting");
  };
  conn.onGoodbye = (reason) => setStatus(`goodbye.${reason}`);
  conn.onError = (error) => {
    if (error.code === ErrorCode.ROOM_UNAVAILABLE) {
      byId("password-row").hidden = false;
      setStatus("error.room_unavailable");
    } else if (error.code === ErrorCode.RATE_LIMITED) setStatus("error.rate_limited");
    else if (error.code === ErrorCode.FORBIDDEN) setStatus("error.forbidden", { message: error.message });
    else if (error.code === ErrorCode.SCREEN_BUSY) setStatus("screen.busy");
    else if (error.code === ErrorCode.ROOM_FULL) setStatus("error.room_full");
    else if (error.code === ErrorCode.INVALID_ROOM) setStatus("error.invalid_room");
    else if (error.code === ErrorCode.MEDIA_FAILED) setStatus("media.failed");
    else setStatus("error.generic", { message: error.message });
  };
  conn.onClose = (code) => {
    meeting.hidden = true;
    prejoin.hidden = false;
    for (const { tile } of tiles.values()) tile.remove();
    tiles.clear();
    screens.clear();
    screenTrack?.stop();
    screenTrack = null;
    serverMe = undefined;
    people.waiting = [];
    byId("recording").hidden = true;
    const said = statusKey?.[0] ?? "";
    if (said.startsWith("goodbye.") || said === "error.room_unavailable" || said === "error.rate_limited") {
      // keep the reason already shown
    } else if (code === CloseCode.NORMAL) setStatus("status.left");
    else if (code === CloseCode.GOING_AWAY) setStatus("status.server_stopped");
    else if (conn.participantId === null) setStatus(statusKey?.[0] === "error.room_full" ? "error.room_full" : "status.unreachable");
    else setStatus("status.disconnected");
    meeting.classList.remove("reconnecting");
    connection = null;
  };
  conn.connect(password);
}

// ------------------------------------------------------------------ start

// A handle for diagnostics (the browser console, the connectivity doctor and tests).
/** @type {any} */ (window).veche = {
  get connection() {
    return connection;
  },
};

byId("room-name").textContent = room;
document.title = `${room} · Veche`;
await setLanguage(preferredLanguage());
bindLanguageSwitcher(byId("lang"), () => {
  translatePage();
  if (statusKey) setStatus(...statusKey);
  setDeviceNote(deviceNoteKey);
  if (connection) renderRoster(connection.participants);
  people.render();
});

byId("prejoin-mic").addEventListener("click", () => toggle("audio"));
byId("prejoin-cam").addEventListener("click", () => toggle("video"));
byId("mic").addEventListener("click", () => toggle("audio"));
byId("cam").addEventListener("click", () => toggle("video"));
for (const id of ["mic-select", "mic-select-call"]) {
  byId(id).addEventListener("change", (/** @type {Event} */ e) => switchDevice("audio", /** @type {HTMLSelectElement} */ (e.target).value));
}
for (const id of ["cam-select", "cam-select-call"]) {
  byId(id).addEventListener("change", (/** @type {Event} */ e) => switchDevice("video", /** @type {HTMLSelectElement} */ (e.target).value));
}
window.addEventListener("online", () => connection?.retryNow());
soundButton.addEventListener("click", () => {
  for (const audio of grid.querySelectorAll("audio")) audio.play().catch(() => {});
  soundButton.hidden = true;
});
byId("leave").addEventListener("click", () => connection?.leave());
byId("screen").addEventListener("click", () => toggleScreen());
byId("record").addEventListener("click", () => {
  connection?.record(byId("record").getAttribute("aria-pressed") !== "true");
});
byId("hand").addEventListener("click", () => {
  const raised = byId("hand").getAttribute("aria-pressed") !== "true";
  connection?.raiseHand(raised);
});
byId("speaker-view").addEventListener("click", () => {
  const on = byId("speaker-view").getAttribute("aria-pressed") !== "true";
  byId("speaker-view").setAttribute("aria-pressed", String(on));
  grid.classList.toggle("speaker-view", on);
});
const reactionBar = /** @type {HTMLElement} */ (document.querySelector(".reactions"));
for (const emoji of REACTIONS) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = emoji;
  b.setAttribute("aria-label", emoji);
  b.addEventListener("click", () => connection?.react(emoji));
  reactionBar.append(b);
}
byId("join-form").addEventListener("submit", (/** @type {Event} */ event) => {
  event.preventDefault();
  if (connection === null) join(nameInput.value.trim(), /** @type {HTMLInputElement} */ (byId("room-password")).value || undefined);
});

try {
  nameInput.value = params.get("name") || localStorage.getItem("veche.name") || "";
} catch {
  nameInput.value = params.get("name") || "";
}
await acquireDevices();
renderLocal();
if (params.get("join") === "1" && nameInput.value.trim()) join(nameInput.value.trim());
else nameInput.focus();
