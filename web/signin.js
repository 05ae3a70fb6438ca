// @ts-check
/**
 * Sign-in with the institution's identity provider, as the start and pre-join pages show it:
 * whether the server offers it (`GET /auth/me`), and a "Sign in" or "Sign out" link. The
 * session itself is an HttpOnly cookie this script never sees; the links go through the
 * server (`/auth/login`, `/auth/logout`), which sends the browser to the provider and back.
 */
import { t } from "./i18n.js";

/**
 * @typedef {object} SignInState
 * @property {boolean} enabled the server offers sign-in
 * @property {boolean} [signed_in] this browser is signed in
 * @property {string | null} [name] the display name the provider gave
 * @property {boolean} [host] the signed-in person may host meetings
 * @property {boolean} [name_editable] the signed-in person may change that name
 * @property {string} [guests] what people who may not host get (allow, lobby, host-first, deny)
 */

/**
 * What the server says about sign-in; "off" if it cannot be asked.
 * @returns {Promise<SignInState>}
 */
export async function signInState() {
  try {
    const response = await fetch("/auth/me", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return { enabled: false };
    return /** @type {SignInState} */ (await response.json());
  } catch {
    return { enabled: false };
  }
}

/**
 * Fill `box` with "Sign in" (back to `next` afterwards) or "Signed in as … · Sign out"; hide
 * it when the server offers no sign-in. Call again after a language change.
 * @param {HTMLElement} box
 * @param {SignInState} state
 * @param {string} next the path to come back to after signing in
 */
export function renderSignIn(box, state, next) {
  box.replaceChildren();
  box.hidden = !state.enabled;
  if (!state.enabled) return;
  if (state.signed_in) {
    const who = document.createElement("span");
    who.id = "signed-in-as";
    who.textContent = t("signin.signed_in_as", { name: state.name ?? "" });
    const out = document.createElement("a");
    out.id = "sign-out";
    out.className = "button";
    out.href = "/auth/logout";
    out.textContent = t("signin.sign_out");
    box.append(who, " ", out);
    return;
  }
  const link = document.createElement("a");
  link.id = "sign-in";
  link.className = "button";
  // The page's language goes along: the provider is asked to show its login page in it.
  link.href = "/auth/login?" + new URLSearchParams({ next, lang: document.documentElement.lang || "en" }).toString();
  link.textContent = t("signin.sign_in");
  box.append(link);
}
