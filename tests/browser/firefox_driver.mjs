// Drives Debian's Firefox ESR for the Python browser tests, over WebDriver BiDi with
// puppeteer-core (which downloads no browser). One JSON command per line on stdin, one JSON reply
// per line on stdout: {"id": n, "op": ..., ...} -> {"id": n, "value": ...} or {"id": n, "error": ...}.
//
// Each participant is a browser context of its own (separate cookies and storage) in a window of
// its own: a background tab is throttled to about one frame a second.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const tools = process.env.VECHE_NODE_TOOLS;
if (!tools) throw new Error("VECHE_NODE_TOOLS must name the folder that holds node_modules/puppeteer-core");
const require = createRequire(`${tools}/package.json`);
const { default: puppeteer } = await import(pathToFileURL(require.resolve("puppeteer-core")).href);

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.VECHE_FIREFOX ?? "/usr/bin/firefox-esr",
  headless: true,
  extraPrefsFirefox: {
    // A synthetic camera and microphone, no permission prompt, no autoplay block.
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    // Real host candidates instead of mDNS names.
    "media.peerconnection.ice.obfuscate_host_addresses": false,
    // Nothing of the browser's own reaches for the network.
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": false,
    "network.connectivity-service.enabled": false,
    "network.captive-portal-service.enabled": false,
    // Anything the test adds (an insecure origin treated as secure, for one).
    ...JSON.parse(process.env.VECHE_FIREFOX_PREFS ?? "{}"),
  },
});

/** @type {Map<number, {context: import("puppeteer-core").BrowserContext, page: import("puppeteer-core").Page}>} */
const pages = new Map();
let nextPage = 1;

/** @param {number} id */
function pageOf(id) {
  const entry = pages.get(id);
  if (!entry) throw new Error(`no page ${id}`);
  return entry.page;
}

/**
 * A function's source applied to an argument, as an expression the page evaluates.
 * @param {string} script
 * @param {unknown} arg
 */
const call = (script, arg) => `(${script})(${arg === undefined ? "" : JSON.stringify(arg)})`;

/** @param {any} command */
async function run(command) {
  switch (command.op) {
    case "open": {
      const context = await browser.createBrowserContext();
      const page = await context.newPage({ type: "window" });
      const id = nextPage++;
      pages.set(id, { context, page });
      page.on("dialog", (dialog) => dialog.dismiss().catch(() => {}));
      return id;
    }
    case "init":
      // Runs in every document the page loads from now on, before the page's own scripts.
      await pageOf(command.page).evaluateOnNewDocument(command.script);
      return null;
    case "goto":
      await pageOf(command.page).goto(command.url);
      return null;
    case "evaluate":
      return await pageOf(command.page).evaluate(call(command.script, command.arg));
    case "wait": {
      const expression = call(command.script, command.arg);
      await pageOf(command.page).waitForFunction(expression, { timeout: command.timeout, polling: 100 });
      return null;
    }
    case "click":
      await pageOf(command.page).click(command.selector);
      return null;
    case "fill": {
      const page = pageOf(command.page);
      await page.locator(command.selector).fill(command.value);
      return null;
    }
    case "press":
      await pageOf(command.page).keyboard.press(command.key);
      return null;
    case "viewport":
      await pageOf(command.page).setViewport({ width: command.width, height: command.height });
      return null;
    case "screenshot":
      await pageOf(command.page).screenshot({ path: command.path });
      return null;
    case "close": {
      const entry = pages.get(command.page);
      pages.delete(command.page);
      await entry?.context.close();
      return null;
    }
    case "version":
      return await browser.version();
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  /** @type {any} */
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    return;
  }
  run(command).then(
    (value) => process.stdout.write(`${JSON.stringify({ id: command.id, value: value ?? null })}\n`),
    (error) => process.stdout.write(`${JSON.stringify({ id: command.id, error: String(error?.message ?? error) })}\n`),
  );
});
lines.on("close", async () => {
  await browser.close().catch(() => {});
  process.exit(0);
});
