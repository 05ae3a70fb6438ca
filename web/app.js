// @ts-check
/** The room page UI: pre-join form, participant list, leave. Signalling lives in connection.js. */
import { Connection } from "./connection.js";
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t } from "./i18n.js";
import { CloseCode, ErrorCode } from "./protocol.gen.js";

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const room = decodeURIComponent(location.pathname.replace(/^\/r\//, ""));
const params = new URLSearchParams(location.search);
const prejoin = byId("prejoin");
const meeting = byId("meeting");
const list = byId("participants");
const status = byId("status");
const nameInput = /** @type {HTMLInputElement} */ (byId("display-name"));

/** @type {Connection | null} */
let connection = null;
/** @type {[string, Record<string, string>] | null} the status line, kept to re-translate */
let statusKey = null;

/**
 * @param {string | null} key
 * @param {Record<string, string>} [values]
 */
function setStatus(key, values = {}) {
  statusKey = key ? [key, values] : null;
  status.textContent = key ? t(key, values) : "";
}

/** @param {Map<string, import("./connection.js").ParticipantInfo>} participants */
function renderRoster(participants) {
  const items = [...participants.values()].map((p) => {
    const li = document.createElement("li");
    li.dataset.participantId = p.id;
    li.textContent = p.id === connection?.participantId ? `${p.name} (${t("meeting.you")})` : p.name;
    if (p.id === connection?.participantId) li.classList.add("me");
    return li;
  });
  list.replaceChildren(...items);
}

/** @param {string} name */
function join(name) {
  try {
    localStorage.setItem("veche.name", name);
  } catch {
    // not saved; the form asks again next time
  }
  setStatus("status.connecting");
  const conn = new Connection(room, name);
  connection = conn;
  conn.onWelcome = () => {
    prejoin.hidden = true;
    meeting.hidden = false;
    setStatus("status.joined");
  };
  conn.onRoster = renderRoster;
  conn.onError = (error) => {
    if (error.code === ErrorCode.ROOM_FULL) setStatus("error.room_full");
    else if (error.code === ErrorCode.INVALID_ROOM) setStatus("error.invalid_room");
    else setStatus("error.generic", { message: error.message });
  };
  conn.onClose = (code) => {
    meeting.hidden = true;
    prejoin.hidden = false;
    list.replaceChildren();
    if (code === CloseCode.NORMAL) setStatus("status.left");
    else if (code === CloseCode.GOING_AWAY) setStatus("status.server_stopped");
    else if (conn.participantId === null) setStatus("status.unreachable");
    else setStatus("status.disconnected");
  };
  conn.connect();
}

byId("room-name").textContent = room;
document.title = `${room} · Veche`;
await setLanguage(preferredLanguage());
bindLanguageSwitcher(/** @type {HTMLSelectElement} */ (byId("lang")), () => {
  if (statusKey) setStatus(...statusKey);
  if (connection) renderRoster(connection.participants);
});

try {
  nameInput.value = params.get("name") || localStorage.getItem("veche.name") || "";
} catch {
  nameInput.value = params.get("name") || "";
}
byId("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  join(nameInput.value.trim());
});
byId("leave").addEventListener("click", () => connection?.leave());
if (params.get("join") === "1" && nameInput.value.trim()) join(nameInput.value.trim());
else nameInput.focus();
