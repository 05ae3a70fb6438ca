// @ts-check
/**
 * The room page's one feedback area, at the top of the screen in every state: a toast for
 * events (the latest one; errors stay until dismissed or replaced, the rest fade) and
 * persistent banners for states that last (reconnecting, muted by a moderator, recording).
 * Everything shown is also said in a polite live region that is always in the page, as are
 * joins, leaves and chat messages that arrive while the chat panel is closed.
 * Texts are kept as keys, so that a language switch translates them again.
 */
import { byId } from "./dom.js";
import { t } from "./i18n.js";

/** Milliseconds an ordinary toast stays; errors stay until dismissed or replaced. */
const TOAST_FOR = 8000;

/**
 * @typedef {[string, Record<string, string>]} Message a translation key and its values
 * @typedef {"reconnecting" | "muted" | "recording"} BannerName
 * @typedef {{key: string, run: () => void}} ToastAction a button: its text's key, what it does
 * @typedef {{text: string, href: string}} ToastLink a link (a download), its text as given
 */

export class Feedback {
  #toast = byId("toast", HTMLElement);
  #text = byId("status", HTMLElement);
  #actions = byId("toast-actions", HTMLElement);
  /** @type {ToastAction[]} */
  #actionList = [];
  #announcer = byId("announcer", HTMLElement);
  /** @type {Record<BannerName, HTMLElement>} */
  #banners = {
    reconnecting: byId("reconnecting-banner", HTMLElement),
    muted: byId("muted-banner", HTMLElement),
    recording: byId("recording", HTMLElement),
  };
  /** @type {Map<BannerName, Message>} the banners shown */
  #shown = new Map();
  /** @type {Message | null} */
  #current = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #fade = undefined;

  constructor() {
    byId("toast-close", HTMLButtonElement).addEventListener("click", () => this.toast(null));
  }

  /** The key of the toast shown, or null. */
  get key() {
    return this.#current?.[0] ?? null;
  }

  /**
   * Show a toast (null: none), replacing the one shown.
   * @param {string | null} key
   * @param {Record<string, string>} [values]
   * @param {{error?: boolean, actions?: ToastAction[], links?: ToastLink[], focus?: boolean}} [options] an
   *   error, or a toast with buttons or links, stays until dismissed or replaced; a button
   *   dismisses the toast after doing its part; the first button takes the focus unless
   *   `focus` is false (a cue to someone who may be typing: Enter must not press it)
   */
  toast(key, values = {}, { error = false, actions = [], links = [], focus = true } = {}) {
    clearTimeout(this.#fade);
    this.#current = key ? [key, values] : null;
    this.#toast.hidden = key === null;
    this.#toast.classList.toggle("error", error);
    this.#text.textContent = key ? t(key, values) : "";
    this.#actionList = actions;
    this.#renderActions(links);
    if (key) this.announce(this.#text.textContent);
    // Fading hides the toast; its text stays readable in the page (#status) until replaced.
    const stays = error || actions.length > 0 || links.length > 0;
    if (key && !stays) this.#fade = setTimeout(() => (this.#toast.hidden = true), TOAST_FOR);
    if (key && actions.length > 0 && focus) this.#actions.querySelector("button")?.focus();
  }

  /** @param {ToastLink[]} links */
  #renderActions(links) {
    const buttons = this.#actionList.map((action) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button";
      button.textContent = t(action.key);
      button.addEventListener("click", () => {
        action.run();
        this.toast(null);
      });
      return button;
    });
    const anchors = links.map((link) => {
      const anchor = document.createElement("a");
      anchor.href = link.href;
      anchor.download = link.text;
      anchor.textContent = link.text;
      return anchor;
    });
    this.#actions.replaceChildren(...buttons, ...anchors);
  }

  /**
   * Show or hide a banner.
   * @param {BannerName} name
   * @param {string | null} key the text's key; null hides the banner
   * @param {Record<string, string>} [values]
   */
  banner(name, key, values = {}) {
    const element = this.#banners[name];
    const before = this.#shown.get(name);
    if (key === null) {
      this.#shown.delete(name);
      element.hidden = true;
      return;
    }
    this.#shown.set(name, [key, values]);
    element.textContent = t(key, values);
    element.hidden = false;
    if (before?.[0] !== key) this.announce(element.textContent);
  }

  /**
   * Say `text` to screen readers, without showing it.
   * @param {string} text
   */
  announce(text) {
    // A changed text is announced; the same text twice needs the region emptied first.
    if (this.#announcer.textContent === text) this.#announcer.textContent = "";
    this.#announcer.textContent = text;
  }

  /** Translate what is shown again (the language changed). */
  retranslate() {
    if (this.#current) this.#text.textContent = t(...this.#current);
    for (const [index, button] of [...this.#actions.querySelectorAll("button")].entries()) {
      const action = this.#actionList[index];
      if (action) button.textContent = t(action.key);
    }
    for (const [name, message] of this.#shown) this.#banners[name].textContent = t(...message);
  }
}
