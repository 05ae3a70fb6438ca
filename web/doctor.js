// @ts-check
/**
 * The connectivity doctor: from this browser, check the WebSocket, a media round trip over UDP
 * to the server and the address it announces, and TURN over UDP, TCP and TLS; say in plain
 * words what to fix. It joins a throwaway room for a few seconds, publishes a silent tone
 * (no microphone needed) and leaves.
 */
import { bindLanguageSwitcher, preferredLanguage, setLanguage, t } from "./i18n.js";
import { byId } from "./dom.js";
import { ClientType, ServerType } from "./protocol.gen.js";
import { Signalling } from "./signalling.js";

/** @typedef {"pass" | "fail" | "skip" | "running"} Status */
/** @typedef {{id: string, status: Status, detail: Record<string, string>}} Check */
/**
 * @typedef {import("./protocol.gen.js").ServerMessage} ServerMessage
 * @typedef {import("./protocol.gen.js").WelcomeMessage} WelcomeMessage
 */

const CHECKS = ["websocket", "media", "address", "turn_udp", "turn_tcp", "turn_tls"];
const MEDIA_TIMEOUT = 10000;
const TURN_TIMEOUT = 8000;

/** @type {Map<string, Check>} */
const results = new Map();
const list = byId("checks", HTMLUListElement);
const summary = byId("summary", HTMLElement);
const again = byId("again", HTMLButtonElement);

/**
 * @param {string} id
 * @param {Status} status
 * @param {Record<string, string>} [detail]
 */
function report(id, status, detail = {}) {
  results.set(id, { id, status, detail });
  render();
}

function render() {
  list.replaceChildren(
    ...CHECKS.map((id) => {
      const check = results.get(id) ?? { id, status: /** @type {Status} */ ("running"), detail: {} };
      const item = document.createElement("li");
      item.dataset.check = id;
      item.dataset.status = check.status;
      const mark = document.createElement("span");
      mark.className = "mark";
      mark.textContent = { pass: "✓", fail: "✗", skip: "–", running: "…" }[check.status];
      mark.setAttribute("aria-label", t(`doctor.status.${check.status}`));
      const title = document.createElement("strong");
      title.textContent = t(`doctor.${id}.title`);
      const text = document.createElement("p");
      text.className = "explain";
      text.textContent = check.status === "running" ? "" : t(`doctor.${id}.${check.status}`, check.detail);
      item.append(mark, " ", title, text);
      return item;
    }),
  );
  const done = [...results.values()].filter((c) => c.status !== "running");
  if (done.length === CHECKS.length) {
    const failed = done.filter((c) => c.status === "fail").length;
    summary.textContent = failed ? t("doctor.summary.failed", { count: String(failed) }) : t("doctor.summary.ok");
    again.disabled = false;
  } else {
    summary.textContent = t("doctor.summary.running");
  }
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @returns {Promise<T>}
 */
function within(promise, ms) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), ms))]);
}

/** A silent-ish tone, so that no microphone permission is needed. */
function toneTrack() {
  const audio = new AudioContext();
  const oscillator = audio.createOscillator();
  const gain = audio.createGain();
  gain.gain.value = 0.001;
  const destination = audio.createMediaStreamDestination();
  oscillator.connect(gain).connect(destination);
  oscillator.start();
  return { track: destination.stream.getAudioTracks()[0], close: () => audio.close() };
}

/**
 * Join a throwaway room over the signalling channel (signalling.js, as the room page does)
 * and time one ping on it.
 * @returns {Promise<{signalling: Signalling, welcome: WelcomeMessage, next: (type: string) => Promise<ServerMessage>, rtt: number}>}
 */
async function join() {
  const room = `doctor-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
  // With join tokens (auth=jwt), open /doctor?token=... with a token for every room (*).
  const token = new URLSearchParams(location.search).get("token");
  const signalling = new Signalling({ room, name: "Connectivity check", token, reconnect: false });
  /** @type {ServerMessage[]} */ const inbox = [];
  /** @type {((message: ServerMessage) => void)[]} */ const waiting = [];
  signalling.onMessage = (message) => {
    const waiter = waiting.shift();
    if (waiter) waiter(message);
    else inbox.push(message);
  };
  /** @type {Promise<never>} */
  const closed = new Promise((_, reject) => {
    signalling.onClose = (reason, code) => reject(new Error(`${reason} (${code})`));
  });
  closed.catch(() => {});
  /**
   * The next message of this type (an error instead rejects).
   * @param {string} type
   * @returns {Promise<ServerMessage>}
   */
  const next = async (type) => {
    for (;;) {
      const message = inbox.shift() ?? (await Promise.race([new Promise((resolve) => waiting.push(resolve)), closed]));
      if (message.type === type) return message;
      if (message.type === ServerType.ERROR) throw new Error(message.message);
    }
  };
  signalling.connect();
  const welcome = await within(next(ServerType.WELCOME), 5000);
  if (welcome.type !== ServerType.WELCOME) throw new Error("no welcome");
  const rtt = await signalling.ping();
  return { signalling, welcome, next, rtt };
}

/**
 * Publish a tone to the server directly (no TURN) and wait for the media connection.
 * @param {Signalling} signalling
 * @param {(type: string) => Promise<ServerMessage>} next
 */
async function mediaRoundTrip(signalling, next) {
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
  const tone = toneTrack();
  try {
    pc.addTransceiver(tone.track, { direction: "sendonly" });
    pc.addEventListener("icecandidate", (event) => {
      const candidate = event.candidate;
      if (!candidate) return;
      signalling.send({ type: ClientType.CANDIDATE, pc: "publish", candidate: candidate.candidate, sdp_mid: candidate.sdpMid, sdp_mline_index: candidate.sdpMLineIndex });
    });
    await pc.setLocalDescription();
    signalling.send({ type: ClientType.OFFER, pc: "publish", sdp: pc.localDescription?.sdp ?? "" });
    const answer = await within(next(ServerType.ANSWER), 5000);
    if (answer.type !== ServerType.ANSWER) throw new Error("no answer");
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const announced = [...answer.sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host/gim)].map((m) => `${m[1]}:${m[2]}`);
    await within(new Promise((resolve, reject) => {
      const check = () => {
        if (pc.connectionState === "connected") resolve(undefined);
        else if (pc.connectionState === "failed") reject(new Error("failed"));
      };
      pc.addEventListener("connectionstatechange", check);
      check();
    }), MEDIA_TIMEOUT).catch(() => null);
    const connected = pc.connectionState === "connected";
    let via = "";
    let rtt = "";
    if (connected) {
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
          const remote = stats.get(s.remoteCandidateId);
          via = remote ? `${remote.address ?? remote.ip}:${remote.port}` : "";
          rtt = s.currentRoundTripTime !== undefined ? String(Math.round(s.currentRoundTripTime * 1000)) : "?";
        }
      });
    }
    return { connected, announced, via, rtt };
  } finally {
    pc.close();
    tone.close();
  }
}

/**
 * Whether a TURN server gives this browser a relay address.
 * @param {RTCIceServer} server one URL, with credentials
 * @returns {Promise<boolean>}
 */
async function relayFrom(server) {
  const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
  try {
    pc.createDataChannel("doctor");
    const found = new Promise((resolve) => {
      pc.addEventListener("icecandidate", (event) => {
        if (event.candidate?.candidate.includes(" typ relay")) resolve(true);
      });
    });
    await pc.setLocalDescription();
    return await within(/** @type {Promise<boolean>} */ (found), TURN_TIMEOUT).catch(() => false);
  } finally {
    pc.close();
  }
}

/**
 * @param {WelcomeMessage} welcome
 * @returns {Record<string, RTCIceServer | null>}
 */
function turnServers(welcome) {
  /** @type {Record<string, RTCIceServer | null>} */
  const found = { turn_udp: null, turn_tcp: null, turn_tls: null };
  for (const server of welcome.ice_servers ?? []) {
    for (const url of server.urls) {
      const kind = url.startsWith("turns:") ? "turn_tls" : url.startsWith("turn:") ? (url.includes("transport=tcp") ? "turn_tcp" : "turn_udp") : null;
      if (kind && !found[kind]) found[kind] = { urls: url, username: server.username ?? undefined, credential: server.credential ?? undefined };
    }
  }
  return found;
}

async function run() {
  again.disabled = true;
  results.clear();
  render();
  /** @type {Awaited<ReturnType<typeof join>> | null} */
  let session = null;
  try {
    session = await join();
    report("websocket", "pass", { rtt: String(Math.round(session.rtt)) });
  } catch (error) {
    report("websocket", "fail", { error: String(error instanceof Error ? error.message : error) });
    for (const id of CHECKS.slice(1)) report(id, "skip", {});
    return;
  }
  const { signalling, welcome, next } = session;
  try {
    if (welcome.ice_transport_policy === "relay") {
      report("media", "skip", {});
      report("address", "skip", {});
    } else {
      const media = await mediaRoundTrip(signalling, next).catch(() => ({ connected: false, announced: [], via: "", rtt: "" }));
      const announced = media.announced.join(", ") || "—";
      report("media", media.connected ? "pass" : "fail", { via: media.via, rtt: media.rtt, announced });
      const unusable = media.announced.length === 0 || media.announced.every((a) => /^(127\.|0\.0\.0\.0|\[?::1?\]?:)/.test(a));
      report("address", media.connected && !unusable ? "pass" : "fail", { announced });
    }
    const turn = turnServers(welcome);
    await Promise.all(
      Object.entries(turn).map(async ([id, server]) => {
        if (!server) return report(id, "skip", {});
        const url = String(server.urls);
        report(id, (await relayFrom(server)) ? "pass" : "fail", { url });
      }),
    );
  } finally {
    signalling.leave();
  }
}

await setLanguage(preferredLanguage());
bindLanguageSwitcher(byId("lang", HTMLSelectElement), render);
again.addEventListener("click", () => run());
await run();
