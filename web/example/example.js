// @ts-check
/**
 * A minimal Veche client: join a meeting, send the camera and microphone, show and play
 * everyone else. All of the protocol is in connection.js (on signalling.js); docs/client.md
 * walks through this file. The full client is app.js.
 */
import { Connection } from "../connection.js";
import { byId } from "../dom.js";
import { preferredLanguage, setLanguage, t } from "../i18n.js";

const form = byId("join-form", HTMLFormElement);
const roomInput = byId("room", HTMLInputElement);
const nameInput = byId("name", HTMLInputElement);
const joinButton = byId("join", HTMLButtonElement);
const leaveButton = byId("leave", HTMLButtonElement);
const status = byId("status", HTMLElement);
const videos = byId("videos", HTMLElement);

/** @type {Connection | null} */
let connection = null;
/** @type {MediaStream | null} this browser's camera and microphone */
let local = null;
/** @type {Map<string, {figure: HTMLElement, caption: HTMLElement, stream: MediaStream}>} by participant id */
const tiles = new Map();

/**
 * The tile of a participant: a video (with its sound) and a caption, made on first use.
 * @param {string} participantId
 */
function tileFor(participantId) {
  let tile = tiles.get(participantId);
  if (!tile) {
    const figure = document.createElement("figure");
    figure.className = "tile";
    figure.dataset.participantId = participantId;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const stream = new MediaStream();
    video.srcObject = stream;
    if (participantId === connection?.participantId) {
      // This participant: the local camera, without its sound (no echo).
      figure.classList.add("me");
      video.muted = true;
      video.srcObject = new MediaStream(local?.getVideoTracks() ?? []);
    }
    const caption = document.createElement("figcaption");
    figure.append(video, caption);
    videos.append(figure);
    tile = { figure, caption, stream };
    tiles.set(participantId, tile);
  }
  return tile;
}

/**
 * @param {string} room
 * @param {string} name
 */
async function join(room, name) {
  joinButton.disabled = true;
  status.textContent = t("status.connecting");
  // Without a camera or microphone, join anyway and only watch.
  local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true }).catch(() => null);
  const conn = new Connection(room, name);
  connection = conn;
  conn.onWelcome = async () => {
    status.textContent = t("status.joined");
    leaveButton.disabled = false;
    // This client offers its publish connection; the server offers the subscribe one when
    // there is something to receive (connection.js answers it). After a reconnection both
    // connections are new, so this runs again.
    const audio = local?.getAudioTracks()[0] ?? null;
    const video = local?.getVideoTracks()[0] ?? null;
    await conn.publish(audio, video);
    conn.update({ audio: audio !== null, video: video !== null });
  };
  conn.onRoster = (participants) => {
    for (const [id, tile] of tiles) {
      if (!participants.has(id)) {
        tile.figure.remove();
        tiles.delete(id);
      }
    }
    for (const p of participants.values()) {
      tileFor(p.id).caption.textContent = p.id === conn.participantId ? `${p.name} (${t("meeting.you")})` : p.name;
    }
  };
  conn.onTrack = (participantId, track, source) => {
    if (source === "screen") return; // this example shows cameras only
    const { stream } = tileFor(participantId);
    for (const old of stream.getTracks()) if (old.kind === track.kind) stream.removeTrack(old);
    stream.addTrack(track);
  };
  conn.onTrackRemoved = (participantId, track) => tiles.get(participantId)?.stream.removeTrack(track);
  conn.onReconnecting = () => {
    status.textContent = t("status.reconnecting");
  };
  conn.onError = (error) => {
    status.textContent = t("error.generic", { message: error.message });
  };
  conn.onClose = (reason) => {
    status.textContent = t("example.closed", { reason });
    for (const tile of tiles.values()) tile.figure.remove();
    tiles.clear();
    for (const track of local?.getTracks() ?? []) track.stop();
    connection = null;
    joinButton.disabled = false;
    leaveButton.disabled = true;
  };
  conn.connect();
}

await setLanguage(preferredLanguage());
const params = new URLSearchParams(location.search);
roomInput.value = params.get("room") ?? "";
nameInput.value = params.get("name") ?? "";
form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (connection === null) join(roomInput.value.trim(), nameInput.value.trim());
});
leaveButton.addEventListener("click", () => connection?.leave());
