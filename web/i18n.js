// @ts-check
/**
 * Translations of every user-visible text. Elements carry `data-i18n="key"` (text),
 * `data-i18n-placeholder` or `data-i18n-label` (aria-label); scripts call {@link t}.
 * The language comes from `?lang=`, then the saved choice, then the browser; English fills gaps.
 */

/** @type {Readonly<Record<string, string>>} */
export const LANGUAGES = Object.freeze({ en: "English", ru: "Русский", fr: "Français" });
const FALLBACK = "en";
const STORAGE_KEY = "veche.lang";

/**
 * Whether `code` is one of {@link LANGUAGES}: an own key only, so that `?lang=constructor` or
 * `__proto__` (inherited from Object.prototype) is no language.
 * @param {string} code
 * @returns {boolean}
 */
function isLanguage(code) {
  return Object.hasOwn(LANGUAGES, code);
}

/** @type {Record<string, string>} */
let strings = {};
/** @type {Record<string, string>} */
let fallback = {};
let current = FALLBACK;

/**
 * Pick the language to use.
 * @returns {string}
 */
export function preferredLanguage() {
  const fromUrl = new URLSearchParams(location.search).get("lang");
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    saved = null;
  }
  const candidates = [fromUrl, saved, ...navigator.languages, navigator.language];
  for (const candidate of candidates) {
    const code = (candidate || "").toLowerCase().split("-")[0];
    if (isLanguage(code)) return code;
  }
  return FALLBACK;
}

/**
 * @param {string} lang
 * @returns {Promise<Record<string, string>>}
 */
async function load(lang) {
  const response = await fetch(`/static/i18n/${lang}.json`);
  if (!response.ok) throw new Error(`no translations for ${lang}`);
  return response.json();
}

/**
 * Load a language and translate the page.
 * @param {string} lang one of {@link LANGUAGES}
 */
export async function setLanguage(lang) {
  if (!isLanguage(lang)) lang = FALLBACK;
  if (Object.keys(fallback).length === 0) fallback = await load(FALLBACK);
  strings = lang === FALLBACK ? fallback : await load(lang);
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // storage may be disabled; the choice then lasts for this page only
  }
  translatePage();
}

/** @returns {string} the active language code */
export function language() {
  return current;
}

/**
 * Translate a key, replacing `{name}` placeholders.
 * @param {string} key
 * @param {Record<string, string>} [params]
 * @returns {string}
 */
export function t(key, params = {}) {
  const template = strings[key] ?? fallback[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => params[name] ?? `{${name}}`);
}

/** Apply translations to every annotated element. */
export function translatePage() {
  document.documentElement.lang = current;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(/** @type {HTMLElement} */ (el).dataset.i18n || "");
  }
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    const key = /** @type {HTMLElement} */ (el).dataset.i18nPlaceholder || "";
    el.setAttribute("placeholder", t(key));
  }
  for (const el of document.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(/** @type {HTMLElement} */ (el).dataset.i18nLabel || ""));
  }
}

/**
 * Fill a `<select>` with the languages and switch on change.
 * @param {HTMLSelectElement} select
 * @param {() => void} [onChange] called after the page is translated again
 */
export function bindLanguageSwitcher(select, onChange) {
  select.replaceChildren(
    ...Object.entries(LANGUAGES).map(([code, label]) => new Option(label, code, false, code === current)),
  );
  select.addEventListener("change", async () => {
    await setLanguage(select.value);
    onChange?.();
  });
}
