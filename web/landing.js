// @ts-check
/**
 * The landing page: language, sign-in where the server offers it, and the error the server
 * sends back (a bad meeting name, a sign-in that failed or a provider that cannot be reached).
 */
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t } from "./i18n.js";
import { renderSignIn, signInState } from "./signin.js";

const errorBox = /** @type {HTMLElement} */ (document.getElementById("form-error"));
const signInBox = /** @type {HTMLElement} */ (document.getElementById("signin"));
/** Error codes the server sends back to this page, and their texts. */
const ERRORS = /** @type {Record<string, string>} */ ({
  invalid_room: "landing.invalid_room",
  signin_failed: "landing.signin_failed",
  signin_unavailable: "landing.signin_unavailable",
  signin_denied: "landing.signin_denied",
});

function showError() {
  // A bad meeting name in a room URL is answered with this page (404) at that URL.
  const badRoomUrl = location.pathname.startsWith("/r/");
  const code = new URLSearchParams(location.search).get("error") ?? (badRoomUrl ? "invalid_room" : null);
  if (code !== null && Object.hasOwn(ERRORS, code)) {
    errorBox.textContent = t(ERRORS[code]);
    errorBox.hidden = false;
  }
}

await setLanguage(preferredLanguage());
const signIn = await signInState();
function render() {
  showError();
  renderSignIn(signInBox, signIn, "/");
}
bindLanguageSwitcher(/** @type {HTMLSelectElement} */ (document.getElementById("lang")), render);
render();
