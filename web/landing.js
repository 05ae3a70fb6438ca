// @ts-check
/** The landing page: language, and the error the server sends back for a bad meeting name. */
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t } from "./i18n.js";

const errorBox = /** @type {HTMLElement} */ (document.getElementById("form-error"));

function showError() {
  // A bad meeting name in a room URL is answered with this page (404) at that URL.
  const badRoomUrl = location.pathname.startsWith("/r/");
  const code = new URLSearchParams(location.search).get("error") ?? (badRoomUrl ? "invalid_room" : null);
  if (code === "invalid_room") {
    errorBox.textContent = t("landing.invalid_room");
    errorBox.hidden = false;
  }
}

await setLanguage(preferredLanguage());
bindLanguageSwitcher(/** @type {HTMLSelectElement} */ (document.getElementById("lang")), showError);
showError();
