// @ts-check
/**
 * The room page: the pre-join screen, the call's controls and status line. It wires the
 * connection (connection.js) to this participant's devices (devices.js), the tiles (tiles.js)
 * and the side panels (panels.js); none of those knows the others.
 */
import { Connection } from "./connection.js";
import { Devices } from "./devices.js";
import { byId, find } from "./dom.js";
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t, translatePage } from "./i18n.js";
import { ChatPanel, PeoplePanel } from "./panels.js";
import { ErrorCode, REACTIONS } from "./protocol.gen.js";
import { Tiles } from "./tiles.js";

/**
 * @typedef {import("./connection.js").ParticipantInfo} ParticipantInfo
 * @typedef {import("./connection.js").CloseReason} CloseReason
 * @typedef {import("./devices.js").DeviceProblem} DeviceProblem
 * @typedef {import("./devices.js").Kind} Kind
 */

const room = decodeURIComponent(location.pathname.replace(/^\/r\//, ""));
const params = new URLSearchParams(location.search);
const prejoin = byId("prejoin", HTMLElement);
const meeting = byId("meeting", HTMLElement);
const statusLine = byId("status", HTMLElement);
const deviceNote = byId("device-note", HTMLElement);
const preview = byId("preview", HTMLVideoElement);
const nameInput = byId("display-name", HTMLInputElement);
const soundButton = byId("sound", HTMLButtonElement);
const screenButton = byId("screen", HTMLButtonElement);
const recordButton = byId("record", HTMLButtonElement);
const recordingBadge = byId("recording", HTMLElement);
const handButton = byId("hand", HTMLButtonElement);
const speakerButton = byId("speaker-view", HTMLButtonElement);

/** @type {Connection | null} */
let connection = null;
const devices = new Devices(
  {
    audio: [byId("mic-select", HTMLSelectElement), byId("mic-select-call", HTMLSelectElement)],
    video: [byId("cam-select", HTMLSelectElement), byId("cam-select-call", HTMLSelectElement)],
  },
  (kind, track) => connection?.replaceTrack(kind, track),
);
const tiles = new Tiles(
  () => connection?.participantId ?? null,
  () => {
    soundButton.hidden = false;
  },
  (shown) => connection?.view(shown),
);
const chat = new ChatPanel(() => connection);
const people = new PeoplePanel(() => connection);
/** @type {MediaStreamTrack | null} this participant's shared screen */
let screenTrack = null;
/** @type {ParticipantInfo | undefined} this participant as the server last described it */
let serverMe;
/** @type {[string, Record<string, string>] | null} */
let statusKey = null;
/** @type {DeviceProblem | null} */
let deviceProblem = null;

/**
 * Show a translated status line (kept so a language switch re-translates it).
 * @param {string | null} key
 * @param {Record<string, string>} [values]
 */
function setStatus(key, values = {}) {
  statusKey = key ? [key, values] : null;
  statusLine.textContent = key ? t(key, values) : "";
}

/**
 * Say why the participation ended.
 * @param {CloseReason} reason
 */
function showClosed(reason) {
  switch (reason) {
    case "left":
      return setStatus("status.left");
    case "removed":
      return setStatus("goodbye.removed");
    case "denied":
      return setStatus("goodbye.denied");
    case "ended":
      return setStatus("goodbye.ended");
    case "replaced":
      return setStatus("goodbye.replaced");
    case "room_unavailable":
      return setStatus("error.room_unavailable");
    case "rate_limited":
      return setStatus("error.rate_limited");
    case "room_full":
      return setStatus("error.room_full");
    case "server_stopped":
      return setStatus("status.server_stopped");
    case "unreachable":
      return setStatus("status.unreachable");
    case "disconnected":
      return setStatus("status.disconnected");
  }
}

/**
 * Say which devices could not be had (kept so a language switch re-translates it).
 * @param {DeviceProblem | null} problem
 */
function setDeviceNote(problem) {
  deviceProblem = problem;
  if (problem === null) deviceNote.textContent = "";
  else if (problem === "missing") deviceNote.textContent = t("media.missing");
  else if (problem === "denied") deviceNote.textContent = t("media.denied");
  else if (problem === "camera_unavailable") deviceNote.textContent = t("media.camera_unavailable");
  else deviceNote.textContent = t("media.microphone_unavailable");
}

// ------------------------------------------------------------------ this participant

/** Reflect the local state in the preview, own tile and toggle buttons. */
function renderLocal() {
  const stream = new MediaStream(devices.camOn && devices.video ? [devices.video] : []);
  preview.srcObject = stream;
  tiles.showOwn(stream);
  byId("preview-off", HTMLElement).hidden = devices.camOn && devices.video !== null;
  for (const id of ["prejoin-mic", "mic"]) byId(id, HTMLButtonElement).setAttribute("aria-pressed", String(devices.micOn));
  for (const id of ["prejoin-cam", "cam"]) byId(id, HTMLButtonElement).setAttribute("aria-pressed", String(devices.camOn));
}

/**
 * Turn the microphone or camera on or off; the others see the indicator.
 * @param {Kind} kind
 */
async function toggle(kind) {
  await devices.toggle(kind);
  connection?.update({ audio: devices.micOn, video: devices.camOn });
  renderLocal();
}

/**
 * Follow what a moderator did to this participant: a mute or camera-off stops sending here too.
 * @param {ParticipantInfo} me
 */
function followServer(me) {
  const before = serverMe;
  serverMe = me;
  if (!before) return;
  if (before.audio && !me.audio && devices.turnOff("audio")) {
    setStatus("moderation.muted");
    renderLocal();
  }
  if (before.video && !me.video && devices.turnOff("video")) {
    setStatus("moderation.camera_off");
    renderLocal();
  }
  handButton.setAttribute("aria-pressed", String(Boolean(me.hand_raised_at)));
}

/**
 * This participant's shared screen changed (null: none).
 * @param {MediaStreamTrack | null} track
 */
function setScreen(track) {
  screenTrack = track;
  tiles.ownScreen = track;
  tiles.renderStage();
  screenButton.setAttribute("aria-pressed", String(track !== null));
}

/** Start or stop sharing the screen. */
async function toggleScreen() {
  const conn = connection;
  if (!conn) return;
  if (screenTrack) {
    screenTrack.stop();
    setScreen(null);
    await conn.stopScreen();
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
  setScreen(track);
  // The browser's own "stop sharing" button ends the track.
  track.addEventListener("ended", () => {
    if (screenTrack === track) toggleScreen();
  });
  // Stopped while the server was being asked: end the share now.
  if (track.readyState === "ended") await toggleScreen();
}

// ------------------------------------------------------------------ the room

/** @param {Map<string, ParticipantInfo>} participants */
function renderRoster(participants) {
  tiles.render(participants);
  const me = connection?.participantId;
  const info = me ? participants.get(me) : undefined;
  if (info) followServer(info);
  renderRecording();
  screenButton.setAttribute("aria-pressed", String(screenTrack !== null));
  people.render();
}

/** Show whether the meeting is recorded, and the record button to moderators. */
function renderRecording() {
  const recording = Boolean(connection?.settings?.recording);
  recordingBadge.hidden = !recording;
  recordButton.hidden = serverMe?.role !== "moderator";
  recordButton.setAttribute("aria-pressed", String(recording));
}

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
    tiles.setSpeaker(welcome.active_speaker ?? null);
    tiles.tileFor(welcome.participant_id);
    await conn.publish(devices.sending("audio"), devices.sending("video"));
    conn.update({ audio: devices.micOn, video: devices.camOn });
  };
  conn.onReconnecting = () => {
    meeting.classList.add("reconnecting");
    setStatus("status.reconnecting");
    // The shared screen went with the connection; share again once back.
    if (screenTrack) {
      screenTrack.stop();
      setScreen(null);
    }
  };
  conn.onRoster = renderRoster;
  conn.onTrack = (participantId, track, source) => tiles.addTrack(participantId, track, source);
  conn.onTrackRemoved = (participantId, track) => tiles.removeTrack(participantId, track);
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
  conn.onReaction = (participantId, emoji) => tiles.showReaction(participantId, emoji);
  conn.onActiveSpeaker = (participantId) => tiles.setSpeaker(participantId);
  conn.onRoomUpdated = (settings) => {
    const was = !recordingBadge.hidden;
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
  conn.onError = (error) => {
    if (error.code === ErrorCode.ROOM_UNAVAILABLE) {
      byId("password-row", HTMLElement).hidden = false;
      setStatus("error.room_unavailable");
    } else if (error.code === ErrorCode.RATE_LIMITED) setStatus("error.rate_limited");
    else if (error.code === ErrorCode.FORBIDDEN) setStatus("error.forbidden", { message: error.message });
    else if (error.code === ErrorCode.SCREEN_BUSY) setStatus("screen.busy");
    else if (error.code === ErrorCode.RECORDING_LIMIT) setStatus("error.recording_limit");
    else if (error.code === ErrorCode.ROOM_FULL) setStatus("error.room_full");
    else if (error.code === ErrorCode.INVALID_ROOM) setStatus("error.invalid_room");
    else if (error.code === ErrorCode.MEDIA_FAILED) setStatus("media.failed");
    else setStatus("error.generic", { message: error.message });
  };
  conn.onClose = (reason) => {
    meeting.hidden = true;
    prejoin.hidden = false;
    tiles.clear();
    screenTrack?.stop();
    setScreen(null);
    serverMe = undefined;
    people.waiting = [];
    recordingBadge.hidden = true;
    showClosed(reason);
    meeting.classList.remove("reconnecting");
    connection = null;
  };
  conn.connect(password);
}

// ------------------------------------------------------------------ start

// A handle for diagnostics (the browser console and tests).
/** @type {any} */ (window).veche = {
  get connection() {
    return connection;
  },
};

byId("room-name", HTMLElement).textContent = room;
document.title = `${room} · Veche`;
await setLanguage(preferredLanguage());
bindLanguageSwitcher(byId("lang", HTMLSelectElement), () => {
  translatePage();
  if (statusKey) setStatus(...statusKey);
  setDeviceNote(deviceProblem);
  if (connection) renderRoster(connection.participants);
  people.render();
});

byId("prejoin-mic", HTMLButtonElement).addEventListener("click", () => toggle("audio"));
byId("prejoin-cam", HTMLButtonElement).addEventListener("click", () => toggle("video"));
byId("mic", HTMLButtonElement).addEventListener("click", () => toggle("audio"));
byId("cam", HTMLButtonElement).addEventListener("click", () => toggle("video"));
/** @type {[string, Kind][]} */
const pickers = [["mic-select", "audio"], ["mic-select-call", "audio"], ["cam-select", "video"], ["cam-select-call", "video"]];
for (const [id, kind] of pickers) {
  const select = byId(id, HTMLSelectElement);
  select.addEventListener("change", async () => {
    if (await devices.switchTo(kind, select.value)) renderLocal();
  });
}
window.addEventListener("online", () => connection?.retryNow());
soundButton.addEventListener("click", () => {
  tiles.playAll();
  soundButton.hidden = true;
});
byId("leave", HTMLButtonElement).addEventListener("click", () => connection?.leave());
screenButton.addEventListener("click", () => toggleScreen());
recordButton.addEventListener("click", () => {
  connection?.record(recordButton.getAttribute("aria-pressed") !== "true");
});
handButton.addEventListener("click", () => {
  connection?.raiseHand(handButton.getAttribute("aria-pressed") !== "true");
});
speakerButton.addEventListener("click", () => {
  const on = speakerButton.getAttribute("aria-pressed") !== "true";
  speakerButton.setAttribute("aria-pressed", String(on));
  tiles.speakerView(on);
});
const reactionBar = find(document, ".reactions", HTMLElement);
for (const emoji of REACTIONS) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = emoji;
  b.setAttribute("aria-label", emoji);
  b.addEventListener("click", () => connection?.react(emoji));
  reactionBar.append(b);
}
byId("join-form", HTMLFormElement).addEventListener("submit", (event) => {
  event.preventDefault();
  if (connection === null) join(nameInput.value.trim(), byId("room-password", HTMLInputElement).value || undefined);
});

try {
  nameInput.value = params.get("name") || localStorage.getItem("veche.name") || "";
} catch {
  nameInput.value = params.get("name") || "";
}
setDeviceNote(await devices.start());
renderLocal();
if (params.get("join") === "1" && nameInput.value.trim()) join(nameInput.value.trim());
else nameInput.focus();
