// @ts-check
/**
 * The side panels of the room page: chat, and people (participants, lobby, room settings).
 * They render what the connection reports and call back into it; no signalling here.
 * Chat text is always set with textContent: it is never parsed as HTML.
 */
import { byId } from "./dom.js";
import { t } from "./i18n.js";

/**
 * @typedef {import("./connection.js").Connection} Connection
 * @typedef {import("./connection.js").ParticipantInfo} ParticipantInfo
 * @typedef {import("./connection.js").ChatEntry} ChatEntry
 * @typedef {import("./connection.js").WaitingInfo} WaitingInfo
 * @typedef {import("./connection.js").RoomState} RoomState
 */

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/**
 * @param {string} label
 * @param {() => void} onClick
 * @returns {HTMLButtonElement}
 */
function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

/** Where panels are sheets over the whole screen (a phone; the same width as grid.js's phone). */
const SHEETS = window.matchMedia("(max-width: 37.5rem)");
/** What an open sheet covers: inert meanwhile, so that Tab and screen readers stay in the sheet. */
const COVERED = [".bar", "#feedback", ".stage-and-grid", ".controls"];

/**
 * A side panel that opens and closes with a toggle button (or its own close button). On a
 * phone it is a sheet over the whole screen, so opening one closes the other.
 */
class Panel {
  /** @type {Panel[]} every panel of the page */
  static all = [];

  /** Make what an open sheet covers inert (and live again when none is open). */
  static cover() {
    const covered = SHEETS.matches && Panel.all.some((panel) => panel.open);
    for (const selector of COVERED) {
      const element = document.querySelector(selector);
      if (element instanceof HTMLElement) element.inert = covered;
    }
  }

  /**
   * @param {string} panelId
   * @param {string} toggleId
   */
  constructor(panelId, toggleId) {
    this.panel = byId(panelId, HTMLElement);
    this.toggle = byId(toggleId, HTMLButtonElement);
    this.closer = this.panel.querySelector(".panel-close");
    Panel.all.push(this);
    this.toggle.addEventListener("click", () => this.setOpen(this.panel.hidden));
    this.closer?.addEventListener("click", () => {
      this.setOpen(false);
      this.toggle.focus();
    });
    // Escape closes an open panel; focus inside it goes back to its toggle.
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !this.open || event.defaultPrevented) return;
      const focused = this.panel.contains(document.activeElement);
      this.setOpen(false);
      if (focused) this.toggle.focus();
    });
  }

  get open() {
    return !this.panel.hidden;
  }

  /** @returns {boolean} whether the panel is shown as a sheet over the whole screen */
  get sheet() {
    return SHEETS.matches;
  }

  /** @param {boolean} open */
  setOpen(open) {
    if (open && this.sheet) for (const other of Panel.all) if (other !== this && other.open) other.setOpen(false);
    this.panel.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
    Panel.cover();
    this.opened();
  }

  opened() {}
}

SHEETS.addEventListener("change", () => Panel.cover());

export class ChatPanel extends Panel {
  #log = byId("chat-log", HTMLOListElement);
  #input = byId("chat-input", HTMLTextAreaElement);
  #unreadBadge = byId("unread", HTMLElement);

  /** @param {() => Connection | null} connection */
  constructor(connection) {
    super("chat-panel", "chat-toggle");
    this.unread = 0;
    const form = byId("chat-form", HTMLFormElement);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.#input.value.trim();
      if (!text) return;
      const to = byId("chat-to", HTMLSelectElement).value === "moderators" ? "moderators" : "everyone";
      connection()?.chat(text, to);
      this.#input.value = "";
    });
    this.#input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }

  opened() {
    if (this.open) {
      this.unread = 0;
      this.#renderUnread();
      this.#input.focus();
    }
  }

  /** Forget every message (a new meeting). */
  clear() {
    this.#log.replaceChildren();
    this.unread = 0;
    this.#renderUnread();
  }

  /**
   * Show a message; counts as unread while the panel is closed.
   * @param {ChatEntry} entry
   * @param {boolean} [history] from the welcome: never unread
   */
  add(entry, history = false) {
    const item = element("li");
    item.dataset.chatId = String(entry.id);
    const time = new Date(entry.at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const meta = `${entry.name} · ${time}` + (entry.to === "moderators" ? ` · ${t("chat.to_moderators")}` : "");
    item.classList.toggle("private", entry.to === "moderators");
    item.append(element("span", "meta", meta), element("span", "text", entry.text));
    this.#log.append(item);
    item.scrollIntoView({ block: "end" });
    if (!this.open && !history) {
      this.unread += 1;
      this.#renderUnread();
    }
  }

  #renderUnread() {
    this.#unreadBadge.hidden = this.unread === 0;
    this.#unreadBadge.textContent = String(this.unread);
    this.#unreadBadge.setAttribute("aria-label", t("chat.unread", { count: String(this.unread) }));
  }
}

export class PeoplePanel extends Panel {
  /** @type {() => Connection | null} */
  #connection;

  /** @param {() => Connection | null} connection */
  constructor(connection) {
    super("people-panel", "people-toggle");
    this.#connection = connection;
    /** @type {WaitingInfo[]} */
    this.waiting = [];
    /** Whether the server offers sign-in: then everyone is marked signed in or guest. */
    this.signInEnabled = false;
    byId("admit-all", HTMLButtonElement).addEventListener("click", () => connection()?.decide(true, null));
    byId("deny-all", HTMLButtonElement).addEventListener("click", () => connection()?.decide(false, null));
    /** @type {[string, string][]} */
    const switches = [["set-locked", "locked"], ["set-lobby", "lobby"], ["set-must-allow", "moderator_must_allow"]];
    for (const [id, field] of switches) {
      const input = byId(id, HTMLInputElement);
      input.addEventListener("change", () => connection()?.configure({ [field]: input.checked }));
    }
    byId("password-form", HTMLFormElement).addEventListener("submit", (event) => {
      event.preventDefault();
      const input = byId("set-password", HTMLInputElement);
      if (input.value) connection()?.configure({ password: input.value });
      input.value = "";
    });
    byId("clear-password", HTMLButtonElement).addEventListener("click", () => connection()?.configure({ password: "" }));
    byId("mute-all", HTMLButtonElement).addEventListener("click", () => connection()?.moderateAll("mute"));
    byId("lower-hands", HTMLButtonElement).addEventListener("click", () => connection()?.moderateAll("lower_hand"));
    byId("end-meeting", HTMLButtonElement).addEventListener("click", () => {
      if (confirm(t("settings.end_confirm"))) connection()?.endMeeting();
    });
  }

  opened() {
    // A sheet hides the toolbar: focus goes into it, to its close button.
    if (this.open && this.sheet && this.closer instanceof HTMLElement) this.closer.focus();
  }

  /** @returns {boolean} whether this participant moderates the room */
  get moderator() {
    const conn = this.#connection();
    const me = conn?.participantId ? conn.participants.get(conn.participantId) : undefined;
    return me?.role === "moderator";
  }

  /** Render participants, lobby and settings from the connection's state. */
  render() {
    const conn = this.#connection();
    if (!conn) return;
    const moderator = this.moderator;
    const people = [...conn.participants.values()].sort((a, b) => {
      // Raised hands first, in the order they were raised; then by arrival.
      const ha = a.hand_raised_at ?? Infinity;
      const hb = b.hand_raised_at ?? Infinity;
      return ha !== hb ? ha - hb : a.joined_at - b.joined_at;
    });
    const hands = people.filter((p) => p.hand_raised_at);
    byId("people-list", HTMLUListElement).replaceChildren(
      ...people.map((p) => this.#person(p, conn, moderator, hands.indexOf(p) + 1)),
    );
    byId("class-tools", HTMLElement).hidden = !moderator;
    byId("lower-hands", HTMLButtonElement).disabled = hands.length === 0;
    // Only a participant who is not a moderator writes to the moderators apart.
    byId("chat-to-row", HTMLElement).hidden = moderator;
    if (moderator) byId("chat-to", HTMLSelectElement).value = "everyone";
    byId("lobby", HTMLElement).hidden = !moderator || this.waiting.length === 0;
    byId("lobby-list", HTMLUListElement).replaceChildren(
      ...this.waiting.map((w) => {
        const item = element("li");
        const who = element("div", "who");
        who.append(element("span", "name", w.name));
        const actions = element("div", "actions");
        actions.append(
          button(t("lobby.admit"), () => conn.decide(true, w.id)),
          button(t("lobby.deny"), () => conn.decide(false, w.id)),
        );
        item.append(who, actions);
        return item;
      }),
    );
    const count = byId("waiting-count", HTMLElement);
    count.hidden = !moderator || this.waiting.length === 0;
    count.textContent = String(this.waiting.length);
    byId("room-settings", HTMLElement).hidden = !moderator;
    const settings = conn.settings;
    if (settings) {
      byId("set-locked", HTMLInputElement).checked = Boolean(settings.locked);
      byId("set-lobby", HTMLInputElement).checked = Boolean(settings.lobby);
      byId("set-must-allow", HTMLInputElement).checked = Boolean(settings.moderator_must_allow);
      byId("password-state", HTMLElement).textContent = settings.has_password
        ? t("settings.has_password")
        : t("settings.no_password");
    }
  }

  /**
   * @param {ParticipantInfo} p
   * @param {Connection} conn
   * @param {boolean} moderator
   * @param {number} hand its place among raised hands (1 is the first raised), 0 if none
   * @returns {HTMLElement}
   */
  #person(p, conn, moderator, hand) {
    const item = element("li");
    item.dataset.participantId = p.id;
    const who = element("div", "who");
    if (hand > 0) {
      const badge = element("span", "hand-badge", String(hand));
      badge.setAttribute("aria-label", t("people.hand_number", { number: String(hand) }));
      badge.title = badge.getAttribute("aria-label") ?? "";
      who.append(badge);
    }
    const isMe = p.id === conn.participantId;
    who.append(element("span", "name", isMe ? `${p.name} (${t("meeting.you")})` : p.name));
    if (p.role === "moderator") who.append(element("span", "role", t("people.moderator")));
    if (this.signInEnabled) {
      const mark = element("span", "badge " + (p.signed_in ? "signed-in" : "guest"), t(p.signed_in ? "people.signed_in" : "people.guest"));
      who.append(mark);
    }
    if (!p.audio) who.append(element("span", "badge", t("tile.mic_off")));
    if (!p.video) who.append(element("span", "badge", t("tile.cam_off")));
    item.append(who);
    if (moderator && !isMe) {
      const actions = element("div", "actions");
      if (p.audio) actions.append(button(t("people.mute"), () => conn.moderate("mute", p.id)));
      if (p.audio_blocked) actions.append(button(t("people.allow_unmute"), () => conn.moderate("allow_unmute", p.id)));
      if (!p.audio) actions.append(button(t("people.ask_unmute"), () => conn.moderate("ask_unmute", p.id)));
      if (p.hand_raised_at) actions.append(button(t("people.lower_hand"), () => conn.moderate("lower_hand", p.id)));
      if (p.video) actions.append(button(t("people.camera_off"), () => conn.moderate("camera_off", p.id)));
      if (p.role !== "moderator") actions.append(button(t("people.make_moderator"), () => conn.moderate("make_moderator", p.id)));
      actions.append(button(t("people.remove"), () => conn.moderate("remove", p.id)));
      item.append(actions);
    }
    return item;
  }
}
