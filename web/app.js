// @ts-check
/**
 * The room page: the pre-join screen, the call's controls, the screen after leaving, and what
 * the feedback area (feedback.js) says. It wires the connection (connection.js) to this
 * participant's devices (devices.js), the tiles (tiles.js) and the side panels (panels.js);
 * none of those knows the others.
 */
import { Connection, REACT_ID } from "./connection.js";
import { CueSound } from "./cues.js";
import { Devices } from "./devices.js";
import { byId, find } from "./dom.js";
import { Feedback } from "./feedback.js";
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t, translatePage } from "./i18n.js";
import { ChatPanel, PeoplePanel } from "./panels.js";
import { ErrorCode, REACTIONS } from "./protocol.gen.js";
import { MutedHint } from "./mutedhint.js";
import { reactionIcon, reactionName } from "./reactions.js";
import { HELLO_ID } from "./signalling.js";
import { renderSignIn, signInState } from "./signin.js";
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
const ended = byId("ended", HTMLElement);
const waitingPage = byId("waiting", HTMLElement);
const waitingPreview = byId("waiting-preview", HTMLVideoElement);
const passwordRow = byId("password-row", HTMLElement);
const passwordInput = byId("room-password", HTMLInputElement);
const deviceNote = byId("device-note", HTMLElement);
const preview = byId("preview", HTMLVideoElement);
const nameInput = byId("display-name", HTMLInputElement);
const soundButton = byId("sound", HTMLButtonElement);
const screenButton = byId("screen", HTMLButtonElement);
const recordButton = byId("record", HTMLButtonElement);
const handButton = byId("hand", HTMLButtonElement);
const speakerButton = byId("speaker-view", HTMLButtonElement);
const pipButton = byId("pip", HTMLButtonElement);
const moreButton = byId("more", HTMLButtonElement);
const moreMenu = byId("more-menu", HTMLElement);
const controls = /** @type {HTMLElement} */ (moreMenu.closest(".controls"));
const devicesPanel = /** @type {HTMLDetailsElement} */ (controls.querySelector(".settings"));

/** @type {Connection | null} */
let connection = null;
const devices = new Devices(
  {
    audio: [byId("mic-select", HTMLSelectElement), byId("mic-select-call", HTMLSelectElement)],
    video: [byId("cam-select", HTMLSelectElement), byId("cam-select-call", HTMLSelectElement)],
    output: [byId("speaker-select", HTMLSelectElement)],
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
const feedback = new Feedback();
const cueSound = new CueSound(byId("cue-sound", HTMLInputElement));
const mutedHint = new MutedHint(() => {
  // Someone muted by a moderator who may not unmute is told so by the banner already.
  if (!serverMe?.audio_blocked) setStatus("hint.muted");
});
/** @type {MediaStreamTrack | null} this participant's shared screen */
let screenTrack = null;
/** @type {ParticipantInfo | undefined} this participant as the server last described it */
let serverMe;
/** @type {DeviceProblem | null} */
let deviceProblem = null;
/** @type {boolean} a moderator muted this participant, and the microphone is still off */
let mutedByModerator = false;
/** @type {boolean} the recording banner is shown */
let recordingShown = false;
/** @type {Map<string, string> | null} who is in (id -> name), to announce joins and leaves */
let known = null;
/** @type {Set<string> | null} whose hand is up, to tell a moderator of a newly raised one */
let hands = null;
/** @type {boolean} this participant waits in the lobby (the waiting page is shown) */
let waiting = false;
/** @type {{name: string, password: string | undefined}} the last join, for Rejoin */
let lastJoin = { name: "", password: undefined };
/** @type {string | null} the room's password as this page knows it (given to join, or set here) */
let knownPassword = null;
/** @type {string | null} the key of the after-leave screen's title */
let endedKey = null;
/** Toasts that stay until replaced or dismissed although they are no error. */
const STAYING = new Set(["status.connecting", "status.unreachable", "media.failed", "screen.busy"]);

/**
 * Show a translated message in the feedback area (kept so a language switch re-translates it).
 * Errors and the states in {@link STAYING} stay; other toasts fade after a few seconds.
 * @param {string | null} key
 * @param {Record<string, string>} [values]
 */
function setStatus(key, values = {}) {
  const error = key !== null && (key.startsWith("error.") || key === "media.failed" || key === "moderation.blocked");
  feedback.toast(key, values, { error: error || (key !== null && STAYING.has(key)) });
}

/**
 * Say why the participation ended: a refused join goes back to the pre-join screen with the
 * reason; otherwise the devices stop and the after-leave screen offers to rejoin.
 * @param {CloseReason} reason
 */
function showClosed(reason) {
  const wasWaiting = waiting;
  waiting = false;
  waitingPage.hidden = true;
  waitingPreview.srcObject = null;
  switch (reason) {
    case "room_unavailable":
      // Locked and wrong password get the same answer, so that outsiders learn nothing: the
      // field is offered and the message names both.
      backToPrejoin();
      passwordRow.hidden = false;
      passwordInput.focus();
      return setStatus(lastJoin.password ? "error.room_unavailable_password" : "error.room_unavailable");
    case "rate_limited":
      setStatus("error.rate_limited");
      return backToPrejoin();
    case "room_full":
      setStatus("error.room_full");
      return backToPrejoin();
    case "forbidden":
      setStatus("error.forbidden_join");
      return backToPrejoin();
    case "sign_in_required":
      setStatus("error.sign_in_required");
      return backToPrejoin();
    case "unreachable":
      setStatus("status.unreachable");
      return backToPrejoin();
    case "left":
      return showEnded(wasWaiting ? "waiting.cancelled" : "status.left");
    case "removed":
      return showEnded("goodbye.removed");
    case "denied":
      return showEnded("goodbye.denied");
    case "ended":
      return showEnded("goodbye.ended");
    case "replaced":
      return showEnded("goodbye.replaced");
    case "server_stopped":
      return showEnded("status.server_stopped");
    case "disconnected":
      return showEnded("status.disconnected");
  }
}

/** Show the pre-join screen again (a refused join), its preview still live. */
function backToPrejoin() {
  prejoin.hidden = false;
  ended.hidden = true;
}

/**
 * The participation is over: stop the camera and microphone and say why, with Rejoin / Close.
 * @param {string} key the reason's translation key
 */
function showEnded(key) {
  devices.stopAll();
  mutedHint.watch(null);
  preview.srcObject = null;
  waitingPreview.srcObject = null;
  prejoin.hidden = true;
  endedKey = key;
  const title = byId("ended-title", HTMLElement);
  title.textContent = t(key);
  ended.hidden = false;
  setStatus(null);
  feedback.announce(title.textContent);
  byId("rejoin", HTMLButtonElement).focus();
}

/** Show (or hide) the banner of a moderator's mute while the microphone stays off. */
function renderMuted() {
  if (devices.micOn) mutedByModerator = false;
  const key = serverMe?.audio_blocked ? "banner.muted_blocked" : "banner.muted";
  feedback.banner("muted", mutedByModerator ? key : null);
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
  if (!waitingPage.hidden) waitingPreview.srcObject = stream;
  tiles.showOwn(stream);
  byId("preview-off", HTMLElement).hidden = devices.camOn && devices.video !== null;
  byId("waiting-camera-off", HTMLElement).hidden = devices.camOn && devices.video !== null;
  for (const id of ["prejoin-mic", "mic"]) byId(id, HTMLButtonElement).setAttribute("aria-pressed", String(devices.micOn));
  for (const id of ["prejoin-cam", "cam"]) byId(id, HTMLButtonElement).setAttribute("aria-pressed", String(devices.camOn));
  renderHint();
}

/** Listen for speech into the microphone while it is muted in the call (see mutedhint.js). */
function renderHint() {
  const inCall = connection?.participantId != null && !meeting.hidden;
  mutedHint.watch(inCall && !devices.micOn ? devices.audio : null);
}

/**
 * Turn the microphone or camera on or off; the others see the indicator.
 * @param {Kind} kind
 */
async function toggle(kind) {
  if (kind === "audio" && !devices.micOn && serverMe?.audio_blocked) {
    setStatus("moderation.blocked");
    return;
  }
  await devices.toggle(kind);
  connection?.update({ audio: devices.micOn, video: devices.camOn });
  renderLocal();
  renderMuted();
}

/**
 * Follow what a moderator did to this participant: a mute or camera-off stops sending here too.
 * @param {ParticipantInfo} me
 */
function followServer(me) {
  const before = serverMe;
  serverMe = me;
  if (!before) return;
  // A moderator's mute is a state, shown by a banner for as long as it lasts.
  if (before.audio && !me.audio && devices.turnOff("audio")) {
    mutedByModerator = true;
    renderLocal();
  }
  renderMuted();
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

/**
 * Announce who came and who went since the last roster (not the roster found on joining).
 * @param {Map<string, ParticipantInfo>} participants
 */
function announceArrivals(participants) {
  const me = connection?.participantId;
  const now = new Map([...participants].filter(([id]) => id !== me).map(([id, p]) => [id, p.name]));
  if (known) {
    for (const [id, name] of now) if (!known.has(id)) feedback.announce(t("announce.joined", { name }));
    for (const [id, name] of known) if (!now.has(id)) feedback.announce(t("announce.left", { name }));
  }
  known = now;
}

/** @param {Map<string, ParticipantInfo>} participants */
function renderRoster(participants) {
  announceArrivals(participants);
  tiles.render(participants);
  const me = connection?.participantId;
  const info = me ? participants.get(me) : undefined;
  if (info) followServer(info);
  renderRecording();
  screenButton.setAttribute("aria-pressed", String(screenTrack !== null));
  people.render();
  renderInvite();
  cueHands(participants);
  byId("cue-sound-row", HTMLElement).hidden = !people.moderator;
}

/**
 * Tell a moderator of a hand raised since the last roster (not of those up on joining).
 * @param {Map<string, ParticipantInfo>} participants
 */
function cueHands(participants) {
  const me = connection?.participantId;
  const up = new Set([...participants.values()].filter((p) => p.hand_raised_at && p.id !== me).map((p) => p.id));
  const raised = hands ? [...up].filter((id) => !hands?.has(id)) : [];
  hands = up;
  const first = raised[0];
  if (!people.moderator || first === undefined) return;
  cue("cues.hand", { name: participants.get(first)?.name ?? "?" }, [{ key: "meeting.people", run: () => people.setOpen(true) }]);
}

/**
 * Tell a moderator that something needs them: a toast that leaves the focus where it is (they
 * may be typing) and, unless turned off, a short sound.
 * @param {string} key
 * @param {Record<string, string>} values
 * @param {import("./feedback.js").ToastAction[]} actions
 */
function cue(key, values, actions) {
  feedback.toast(key, values, { actions, focus: false });
  cueSound.play();
}

/** Moderators who know the password may copy a link that carries it. */
function renderInvite() {
  const hasPassword = Boolean(connection?.settings?.has_password);
  byId("copy-password-link", HTMLButtonElement).hidden = !people.moderator || !hasPassword || !knownPassword;
}

/** Show whether the meeting is recorded, and the record button to moderators. */
function renderRecording() {
  const recording = Boolean(connection?.settings?.recording);
  recordingShown = recording;
  feedback.banner("recording", recording ? "recording.active" : null);
  recordButton.hidden = serverMe?.role !== "moderator" || !connection?.canRecord;
  recordButton.setAttribute("aria-pressed", String(recording));
}

/**
 * @param {string} name
 * @param {string} [password]
 */
function join(name, password) {
  lastJoin = { name, password };
  knownPassword = password ?? null;
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
    feedback.banner("reconnecting", null);
    const first = meeting.hidden;
    prejoin.hidden = true;
    ended.hidden = true;
    waiting = false;
    waitingPage.hidden = true;
    waitingPreview.srcObject = null;
    meeting.hidden = false;
    serverMe = undefined;
    known = null;
    hands = null;
    setStatus(!returning ? "status.joined" : welcome.resumed ? "status.reconnected" : "status.rejoined");
    if (first) byId("mic", HTMLButtonElement).focus();
    chat.clear();
    for (const entry of welcome.chat ?? []) chat.add(entry, true);
    tiles.setSpeaker(welcome.active_speaker ?? null);
    tiles.tileFor(welcome.participant_id);
    await conn.publish(devices.sending("audio"), devices.sending("video"));
    conn.update({ audio: devices.micOn, video: devices.camOn });
    renderHint();
  };
  conn.onReconnecting = () => {
    meeting.classList.add("reconnecting");
    feedback.banner("reconnecting", "status.reconnecting");
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
    else if (state === "connected" && feedback.key === "status.joined") setStatus("status.connected_media");
  };
  conn.onChat = (entry) => {
    chat.add(entry);
    if (!chat.open && entry.participant_id !== conn.participantId) {
      if (people.moderator) {
        const text = entry.text.length > 80 ? `${entry.text.slice(0, 79)}…` : entry.text;
        cue("cues.chat", { name: entry.name, text }, [{ key: "cues.open_chat", run: () => chat.setOpen(true) }]);
      } else feedback.announce(t("announce.chat", { name: entry.name, text: entry.text }));
    }
  };
  conn.onReaction = (participantId, emoji) => tiles.showReaction(participantId, emoji);
  conn.onActiveSpeaker = (participantId) => tiles.setSpeaker(participantId);
  conn.onRoomUpdated = (settings) => {
    const was = recordingShown;
    renderRecording();
    if (settings.recording && !was) {
      // Everyone is told, and asked to take note, that the meeting is now recorded.
      feedback.toast("recording.notice", {}, { actions: [{ key: "recording.acknowledge", run: () => {} }] });
    } else if (settings.recording !== was) setStatus("recording.stopped");
    people.render();
    renderInvite();
  };
  conn.onAsked = (_request, by) => {
    feedback.toast("moderation.asked_unmute", { name: by }, {
      actions: [
        {
          key: "moderation.unmute_now",
          run: () => {
            if (!devices.micOn) toggle("audio");
          },
        },
      ],
    });
  };
  conn.onRecordingReady = (ready) => {
    feedback.toast("recording.ready", {}, { links: ready.files.map((file) => ({ text: file.name, href: file.url })) });
  };
  conn.onLobby = (list) => {
    const before = new Set(people.waiting.map((w) => w.id));
    const newcomer = list.filter((w) => !before.has(w.id)).at(-1);
    people.waiting = list;
    people.render();
    // Nobody waits any more (let in, by someone else or by the sign-in rules, or gone): the
    // cue about them goes too.
    if (list.length === 0 && feedback.key === "lobby.waits") feedback.toast(null);
    if (newcomer && people.moderator) {
      cue("lobby.waits", { name: newcomer.name, count: String(list.length) }, [
        { key: "lobby.let_in", run: () => conn.decide(true, newcomer.id) },
        { key: "meeting.people", run: () => people.setOpen(true) },
      ]);
    }
  };
  conn.onWaiting = (forHost) => {
    // The waiting page: one's own preview, what happens now, and a way out. Waiting for a
    // host (the server's sign-in rules), one enters by oneself once a host is here.
    waiting = true;
    prejoin.hidden = true;
    waitingPage.hidden = false;
    setStatus(null);
    renderLocal();
    const title = byId("waiting-title", HTMLElement);
    title.dataset.i18n = forHost ? "waiting.for_host_title" : "waiting.title";
    title.textContent = t(forHost ? "waiting.for_host_title" : "waiting.title");
    const note = byId("waiting-note", HTMLElement);
    note.dataset.i18n = forHost ? "waiting.for_host_note" : "waiting.note";
    note.textContent = t(forHost ? "waiting.for_host_note" : "waiting.note");
    feedback.announce(title.textContent ?? "");
    byId("waiting-cancel", HTMLButtonElement).focus();
  };
  // Errors are worded from their code, in the page's language: the server's English
  // message is never shown. A refused join is said once the connection closes (showClosed).
  conn.onError = (error) => {
    if (error.ref === HELLO_ID) return;
    if (error.ref === REACT_ID && error.code === ErrorCode.RATE_LIMITED) setStatus("reaction.too_many");
    else if (error.code === ErrorCode.RATE_LIMITED) setStatus("error.rate_limited");
    else if (error.code === ErrorCode.FORBIDDEN) setStatus(serverMe?.audio_blocked ? "moderation.blocked" : "error.forbidden");
    else if (error.code === ErrorCode.SCREEN_BUSY) setStatus("screen.busy");
    else if (error.code === ErrorCode.RECORDING_LIMIT) setStatus("error.recording_limit");
    else if (error.code === ErrorCode.ROOM_FULL) setStatus("error.room_full");
    else if (error.code === ErrorCode.INVALID_ROOM) setStatus("error.invalid_room");
    else if (error.code === ErrorCode.MEDIA_FAILED) setStatus("media.failed");
    else if (error.code === ErrorCode.UNAVAILABLE) setStatus("error.unavailable");
    else if (error.code === ErrorCode.TOO_LONG) setStatus("error.too_long");
    else if (error.code === ErrorCode.UNSUPPORTED) setStatus("error.unsupported");
    else if (error.code === ErrorCode.NOT_FOUND) setStatus("error.not_found");
    else if (error.code === ErrorCode.NOT_ADMITTED) setStatus("error.not_admitted");
    else setStatus("error.generic", { code: error.code });
  };
  conn.onClose = (reason) => {
    meeting.hidden = true;
    tiles.clear();
    screenTrack?.stop();
    setScreen(null);
    serverMe = undefined;
    known = null;
    hands = null;
    mutedByModerator = false;
    people.waiting = [];
    chat.setOpen(false);
    people.setOpen(false);
    feedback.banner("recording", null);
    feedback.banner("reconnecting", null);
    feedback.banner("muted", null);
    recordingShown = false;
    meeting.classList.remove("reconnecting");
    connection = null;
    renderHint();
    showClosed(reason);
  };
  conn.connect(password);
}

// ------------------------------------------------------------------ start

const reactionBar = find(document, ".reactions", HTMLElement);

// A handle for diagnostics (the browser console and tests).
/** @type {any} */ (window).veche = {
  get connection() {
    return connection;
  },
  /** the page has its devices and is ready to join */
  ready: false,
};

// An invite link may carry the room's password in its fragment (`#password=...`), which the
// browser never sends to a server; it is taken out of the address bar once read.
const invitePassword = new URLSearchParams(location.hash.slice(1)).get("password");
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
if (invitePassword) {
  passwordInput.value = invitePassword;
  passwordRow.hidden = false;
}

byId("room-name", HTMLElement).textContent = room;
document.title = `${room} · Veche`;
await setLanguage(preferredLanguage());
/** Translate what the scripts wrote (the page's annotated texts are translated by i18n.js). */
function translateScripted() {
  byId("meeting-title", HTMLElement).textContent = t("meeting.title", { room });
  if (endedKey) byId("ended-title", HTMLElement).textContent = t(endedKey);
  for (const b of reactionBar.querySelectorAll("button")) {
    const name = reactionName(b.dataset.reaction ?? "");
    b.setAttribute("aria-label", name);
    b.title = name;
  }
  // A tooltip for the toolbar's icon buttons, whose names a phone or a narrow window shows only as icons.
  for (const b of document.querySelectorAll(".controls .icon-button")) {
    b.setAttribute("title", b.querySelector(".label")?.textContent ?? "");
  }
  fitToolbar();
}

/** @type {import("./signin.js").SignInState} what the server says about sign-in (loaded below) */
let signIn = { enabled: false };
bindLanguageSwitcher(byId("lang", HTMLSelectElement), () => {
  translatePage();
  translateScripted();
  feedback.retranslate();
  setDeviceNote(deviceProblem);
  if (connection) renderRoster(connection.participants);
  people.render();
  renderSignIn(byId("signin", HTMLElement), signIn, location.pathname);
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
byId("waiting-cancel", HTMLButtonElement).addEventListener("click", () => connection?.leave());
byId("quality", HTMLSelectElement).addEventListener("change", (event) => {
  const value = /** @type {HTMLSelectElement} */ (event.target).value;
  tiles.view.setMode(value === "low" || value === "audio" ? value : "auto");
});
screenButton.addEventListener("click", () => toggleScreen());
// Phones have no screen to share (no getDisplayMedia): no button that can only fail.
screenButton.hidden = typeof navigator.mediaDevices?.getDisplayMedia !== "function";
const speakerSelect = byId("speaker-select", HTMLSelectElement);
speakerSelect.addEventListener("change", async () => {
  devices.speaker = speakerSelect.value;
  if (!(await tiles.setSink(speakerSelect.value))) setStatus("devices.speaker_failed");
});
pipButton.hidden = !document.pictureInPictureEnabled;
pipButton.addEventListener("click", async () => {
  try {
    if ((await tiles.togglePictureInPicture()) === "nobody") setStatus("pip.nobody");
  } catch {
    setStatus("pip.failed");
  }
});
for (const event of ["enterpictureinpicture", "leavepictureinpicture"]) {
  document.addEventListener(event, () => pipButton.setAttribute("aria-pressed", String(document.pictureInPictureElement !== null)), true);
}

/**
 * Open or close the More menu (on a phone, the toolbar's one row holds the rest there; on a
 * wide screen its items stand in the toolbar and it is never shown).
 * @param {boolean} open
 */
function setMoreOpen(open) {
  moreMenu.classList.toggle("open", open);
  moreButton.setAttribute("aria-expanded", String(open));
}
moreButton.addEventListener("click", () => {
  const open = !moreMenu.classList.contains("open");
  setMoreOpen(open);
  if (open) /** @type {HTMLElement | null} */ (moreMenu.querySelector("button:not([hidden]), summary"))?.focus();
});
// A choice made in the menu closes it (a device picker's does not: it may take several);
// so does a click or tap anywhere else.
document.addEventListener("click", (event) => {
  if (!moreMenu.classList.contains("open") || !(event.target instanceof Element)) return;
  if (event.target.closest("#more")) return;
  if (moreMenu.contains(event.target) && (!event.target.closest("button") || event.target.closest(".settings"))) return;
  setMoreOpen(false);
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !moreMenu.classList.contains("open")) return;
  const focused = moreMenu.contains(document.activeElement);
  setMoreOpen(false);
  if (focused) moreButton.focus();
});
/**
 * Fit a wide screen's toolbar on one row: where the names do not all fit (a narrow window, a
 * long language, a moderator's extra button), the menu's items show only their icons
 * (`compact`), then every button does (`icons`); see style.css. A phone's toolbar is laid out
 * by the style sheet alone, and an open Devices panel is left as it is.
 */
function fitToolbar() {
  if (devicesPanel.open) return;
  for (const step of [[], ["compact"], ["compact", "icons"]]) {
    controls.classList.remove("compact", "icons");
    controls.classList.add(...step);
    if (getComputedStyle(moreButton).display !== "none" || toolbarFits()) return;
  }
}
/** @returns {boolean} whether every control shown in the toolbar stands on its first row */
function toolbarFits() {
  const shown = [...controls.querySelectorAll("button, summary")].filter((el) => el.getClientRects().length > 0);
  if (shown.length === 0) return true;
  const first = shown[0].getBoundingClientRect();
  return shown.every((el) => el.getBoundingClientRect().top < first.bottom);
}
let toolbarWidth = -1;
new ResizeObserver(() => {
  if (controls.clientWidth === toolbarWidth) return; // its own height follows from the fit
  toolbarWidth = controls.clientWidth;
  fitToolbar();
}).observe(controls);
new MutationObserver(() => fitToolbar()).observe(controls, { subtree: true, attributeFilter: ["hidden"] });
devicesPanel.addEventListener("toggle", () => fitToolbar());

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
for (const emoji of REACTIONS) {
  const b = document.createElement("button");
  b.type = "button";
  b.dataset.reaction = emoji;
  // An icon rather than the emoji: many systems have no emoji font (see reactions.js).
  b.append(reactionIcon(emoji));
  b.addEventListener("click", () => connection?.react(emoji));
  reactionBar.append(b);
}
translateScripted();
byId("join-form", HTMLFormElement).addEventListener("submit", (event) => {
  event.preventDefault();
  if (connection === null) join(nameInput.value.trim(), passwordInput.value || undefined);
});
byId("rejoin", HTMLButtonElement).addEventListener("click", async () => {
  if (connection !== null) return;
  const { micOn, camOn } = devices;
  ended.hidden = true;
  endedKey = null;
  setDeviceNote(await devices.start());
  // Come back as one left: what was switched off stays off.
  if (!micOn && devices.micOn) await devices.toggle("audio");
  if (!camOn && devices.camOn) await devices.toggle("video");
  renderLocal();
  join(lastJoin.name, lastJoin.password);
});
/**
 * Copy an invitation to this meeting; with `password`, in the link's fragment (never sent to
 * the server: the page reads it and fills the field).
 * @param {string} [password]
 */
async function copyInvite(password) {
  const link = `${location.origin}/r/${encodeURIComponent(room)}` + (password ? `#password=${encodeURIComponent(password)}` : "");
  try {
    await navigator.clipboard.writeText(link);
    setStatus(password ? "invite.copied_with_password" : "invite.copied");
  } catch {
    setStatus("invite.copy_failed", { link });
  }
}
byId("invite", HTMLButtonElement).addEventListener("click", () => copyInvite());
// Before the people panel sends (and clears) a new password: this page knows it from now on.
byId("password-form", HTMLFormElement).addEventListener(
  "submit",
  () => {
    const value = byId("set-password", HTMLInputElement).value;
    if (value) knownPassword = value;
  },
  { capture: true },
);
byId("clear-password", HTMLButtonElement).addEventListener("click", () => (knownPassword = null));
byId("copy-password-link", HTMLButtonElement).addEventListener("click", () => copyInvite(knownPassword ?? undefined));

/** The keyboard shortcuts (a letter alone, never while typing or with a modifier). */
const shortcuts = byId("shortcuts", HTMLDialogElement);
byId("shortcuts-open", HTMLButtonElement).addEventListener("click", () => shortcuts.showModal());
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof Element && target.closest("input, textarea, select, [contenteditable]") !== null;
  if (typing || event.ctrlKey || event.metaKey || event.altKey || meeting.hidden || shortcuts.open) return;
  // The Latin letter typed, or, on a layout without Latin letters (Cyrillic), the letter
  // its key has on a QWERTY keyboard.
  const latin = /^[a-z]$/i.test(event.key);
  const key = latin ? event.key.toLowerCase() : event.code.startsWith("Key") ? event.code.slice(3).toLowerCase() : "";
  if (key === "m") byId("mic", HTMLButtonElement).click();
  else if (key === "v") byId("cam", HTMLButtonElement).click();
  else if (key === "c") byId("chat-toggle", HTMLButtonElement).click();
  else if (key === "h") handButton.click();
  else if (event.key === "?") shortcuts.showModal();
  else return;
  event.preventDefault();
});

/** The tab's title says what waits for you: unread messages, people in the lobby. */
function renderTitle() {
  const waiting = people.moderator ? people.waiting.length : 0;
  const count = chat.unread + waiting;
  document.title = (count > 0 ? `(${count}) ` : "") + `${room} · Veche`;
}
setInterval(renderTitle, 500);

// Closing works for a window a script opened; otherwise the link leads to the start page.
byId("close-page", HTMLAnchorElement).addEventListener("click", () => window.close());

try {
  nameInput.value = params.get("name") || localStorage.getItem("veche.name") || "";
} catch {
  nameInput.value = params.get("name") || "";
}
// Signed in: the provider's name, which the server may not let one change.
signIn = await signInState();
people.signInEnabled = signIn.enabled;
renderSignIn(byId("signin", HTMLElement), signIn, location.pathname);
if (signIn.signed_in && signIn.name) {
  if (!params.get("name") || !signIn.name_editable) nameInput.value = signIn.name;
  nameInput.readOnly = !signIn.name_editable;
}
setDeviceNote(await devices.start());
renderLocal();
if (params.get("join") === "1" && nameInput.value.trim()) join(nameInput.value.trim(), passwordInput.value || undefined);
else nameInput.focus();
/** @type {any} */ (window).veche.ready = true;
