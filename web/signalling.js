// @ts-check
/**
 * The signalling channel to a Veche server: one WebSocket to `/ws`, the `hello` handshake,
 * keepalive pings, requests answered by `ack` or `error`, and reconnection with backoff that
 * resumes the same participant. No DOM and no media: connection.js builds the peer connections
 * on top of it, the connectivity doctor uses it alone. docs/client.md shows how.
 */
import { ClientType, CloseCode, ErrorCode, PROTOCOL_VERSION, ServerType } from "./protocol.gen.js";

/** Milliseconds between liveness pings on an open connection. */
const PING_INTERVAL = 3000;
/** A connection silent for this long (no message, not even a pong) is taken as lost. */
const DEAD_AFTER = 7000;
/** A reconnection attempt whose socket does not open within this long is given up. */
const CONNECT_TIMEOUT = 5000;
/** How long to keep trying to reconnect after a loss, as LiveKit's client does (about a minute). */
const RECONNECT_BUDGET = 70000;
/** A request with neither `ack` nor `error` after this long counts as refused. */
const REQUEST_TIMEOUT = 10000;
/** Close codes after which trying again cannot help: the client said leave, broke a rule, sent too much. */
const FINAL_CLOSE_CODES = new Set(/** @type {number[]} */ ([CloseCode.NORMAL, CloseCode.POLICY, CloseCode.TOO_BIG]));
/** The `id` of every `hello`, so that an error answering it is known to refuse the join. */
export const HELLO_ID = "hello";

/**
 * @typedef {import("./protocol.gen.js").ServerMessage} ServerMessage
 * @typedef {import("./protocol.gen.js").ClientMessage} ClientMessage
 */

/**
 * Why a participation ended, as {@link Signalling#onClose} reports it:
 * - `left`: this client said `leave`;
 * - `removed`, `denied`, `ended`, `replaced`: the server's `goodbye` (a moderator removed this
 *   participant or turned it away from the lobby, the meeting ended, the same identity joined
 *   elsewhere);
 * - `room_unavailable`, `rate_limited`, `room_full`, `forbidden`: the server refused the `hello`
 *   (`forbidden`: the join token is for another room; `sign_in_required`: only signed-in
 *   people may join); reported as soon as the refusal
 *   arrives, so that trying again (with a password, say) can start at once;
 * - `server_stopped`: the server shut down (1001) and could not be reached again;
 * - `unreachable`: never in the room (the socket did not open, or closed before a `welcome`);
 * - `disconnected`: the connection was lost and could not be re-established in about a minute.
 * @typedef {"left" | "removed" | "denied" | "ended" | "replaced" | "room_unavailable" | "rate_limited" | "room_full" | "forbidden" | "sign_in_required" | "server_stopped" | "unreachable" | "disconnected"} CloseReason
 */

/**
 * Milliseconds before reconnection attempt `attempt` (0, 1, ...): at once, then doubling from
 * 300 ms to at most 7 s, each with ±50% jitter so that a restarted server is not hit by every
 * client at the same instant.
 * @param {number} attempt
 */
export function reconnectDelay(attempt) {
  if (attempt === 0) return 0;
  return Math.min(7000, 300 * 2 ** (attempt - 1)) * (0.5 + Math.random());
}

/**
 * @typedef {object} SignallingOptions
 * @property {string} room the room name, as in the page's URL
 * @property {string} name the display name
 * @property {string | null} [token] a join token, where the server requires one
 * @property {() => string[] | undefined} [receiveCodecs] the MIME types to name in `hello`
 * @property {boolean} [reconnect] false: a lost connection ends the participation (default true)
 */

export class Signalling {
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {string | null} */
  #participantId = null;
  /** @type {string | null} */
  #resumeToken = null;
  /** @type {string | undefined} */
  #password = undefined;
  /** the client or the server ended the participation: do not reconnect */
  #ending = false;
  /** @type {number | null} when the connection was lost (Date.now()), while reconnecting */
  #lostAt = null;
  #attempt = 0;
  #lastHeard = 0;
  #nextId = 1;
  /** @type {Map<string, (ok: boolean) => void>} requests waiting for their verdict, by id */
  #pending = new Map();
  /** @type {string | null} the code of the error that refused the last `hello` */
  #refusal = null;
  /** @type {"removed" | "denied" | "ended" | "replaced" | null} */
  #goodbye = null;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #pinger = undefined;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #retry = undefined;
  /** @type {SignallingOptions} */
  #options;

  /** @param {SignallingOptions} options */
  constructor(options) {
    this.#options = options;
    /** @type {(message: ServerMessage) => void} every server message, after this layer's own bookkeeping */
    this.onMessage = () => {};
    /** @type {(attempt: number) => void} the connection was lost; reconnection attempt `attempt` is under way */
    this.onReconnecting = () => {};
    /** @type {(reason: CloseReason, code: number) => void} the participation ended for good; `code` as the socket closed (1006 if it never opened) */
    this.onClose = () => {};
  }

  /** This participant's id, from the last `welcome`; null until then. */
  get participantId() {
    return this.#participantId;
  }

  /** The secret to come back as the same participant, from the last `welcome`. */
  get resumeToken() {
    return this.#resumeToken;
  }

  /** Whether the connection is lost and being re-established. */
  get reconnecting() {
    return this.#lostAt !== null;
  }

  /**
   * Open the WebSocket and say `hello`. A lost connection is reopened with backoff and resumes
   * the same participant (see `onReconnecting`).
   * @param {string} [password] the room's password, if it has one
   */
  connect(password) {
    this.#password = password;
    this.#open();
  }

  /**
   * Send one protocol message, if the socket is open.
   * @param {ClientMessage} message
   * @returns {boolean} whether it was sent
   */
  send(message) {
    if (this.#ws?.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  /**
   * Send a message with an `id` and wait for the server's verdict on it: true for its `ack`
   * (or `pong`), false for an `error`, a lost connection or no answer within `timeout` ms.
   * @param {ClientMessage} message
   * @param {number} [timeout]
   * @returns {Promise<boolean>}
   */
  request(message, timeout = REQUEST_TIMEOUT) {
    const id = `r${this.#nextId++}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#settle(id, false), timeout);
      this.#pending.set(id, (ok) => {
        clearTimeout(timer);
        resolve(ok);
      });
      if (!this.send({ ...message, id })) this.#settle(id, false);
    });
  }

  /**
   * The round trip of one `ping`, in milliseconds.
   * @param {number} [timeout]
   * @returns {Promise<number>} rejects when no `pong` comes within `timeout` ms
   */
  async ping(timeout = 5000) {
    const sent = performance.now();
    if (!(await this.request({ type: ClientType.PING }, timeout))) throw new Error("no pong");
    return performance.now() - sent;
  }

  /** Try now (the browser says the network is back), without waiting for the next attempt. */
  retryNow() {
    if (this.#lostAt === null || this.#ws !== null) return;
    clearTimeout(this.#retry);
    this.#open();
  }

  /** Leave the room; the server closes the socket. While reconnecting, stop trying. */
  leave() {
    this.#ending = true;
    if (this.#ws) {
      this.send({ type: ClientType.LEAVE });
    } else if (this.#lostAt !== null) {
      clearTimeout(this.#retry);
      this.#lostAt = null;
      this.onClose("left", CloseCode.NORMAL);
    }
  }

  #open() {
    const { room, name, token } = this.#options;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ room });
    if (token) query.set("token", token);
    const ws = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
    this.#ws = ws;
    this.#refusal = null;
    const opening = setTimeout(() => {
      if (this.#ws === ws && ws.readyState === WebSocket.CONNECTING) this.#lost(ws, CloseCode.RECONNECTING);
    }, CONNECT_TIMEOUT);
    ws.addEventListener("open", () => {
      clearTimeout(opening);
      if (this.#ws !== ws) return;
      this.#lastHeard = Date.now();
      const codecs = this.#options.receiveCodecs?.();
      this.send({
        type: ClientType.HELLO,
        id: HELLO_ID,
        version: PROTOCOL_VERSION,
        room,
        name,
        ...(codecs ? { receive_codecs: codecs } : {}),
        ...(this.#password ? { password: this.#password } : {}),
        ...(this.#resumeToken ? { resume: this.#resumeToken } : {}),
      });
      clearInterval(this.#pinger);
      this.#pinger = setInterval(() => this.#checkAlive(ws), PING_INTERVAL);
    });
    ws.addEventListener("message", (event) => {
      if (this.#ws !== ws) return;
      this.#lastHeard = Date.now();
      this.#receive(event.data);
    });
    ws.addEventListener("close", (event) => {
      clearTimeout(opening);
      if (this.#ws === ws) this.#lost(ws, event.code);
    });
  }

  /**
   * Ping the server; a connection that has been silent too long is given up and reopened
   * (closed with 4000 so the server, if it hears it, keeps this participant for a resume).
   * @param {WebSocket} ws
   */
  #checkAlive(ws) {
    if (this.#ws !== ws) return;
    if (Date.now() - this.#lastHeard > DEAD_AFTER) this.#lost(ws, CloseCode.RECONNECTING);
    else this.send({ type: ClientType.PING });
  }

  /**
   * A socket ended: reconnect if the participation was lost rather than ended.
   * @param {WebSocket} ws
   * @param {number} code
   */
  #lost(ws, code) {
    this.#ws = null;
    clearInterval(this.#pinger);
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      ws.close(CloseCode.RECONNECTING, "reconnecting");
    }
    for (const id of [...this.#pending.keys()]) this.#settle(id, false);
    const joined = this.#participantId !== null;
    const now = Date.now();
    if (this.#lostAt === null) this.#lostAt = now;
    const final = !joined || this.#ending || this.#options.reconnect === false || FINAL_CLOSE_CODES.has(code);
    if (final || now - this.#lostAt > RECONNECT_BUDGET) {
      this.#lostAt = null;
      this.onClose(this.#reason(code), code);
      return;
    }
    const attempt = this.#attempt++;
    this.onReconnecting(attempt);
    this.#retry = setTimeout(() => this.#open(), reconnectDelay(attempt));
  }

  /**
   * Why the participation ended, once the last socket closed with `code`.
   * @param {number} code
   * @returns {CloseReason}
   */
  #reason(code) {
    if (this.#goodbye) return this.#goodbye;
    if (this.#refusal === ErrorCode.ROOM_UNAVAILABLE) return "room_unavailable";
    if (this.#refusal === ErrorCode.RATE_LIMITED) return "rate_limited";
    if (this.#refusal === ErrorCode.ROOM_FULL) return "room_full";
    if (this.#refusal === ErrorCode.FORBIDDEN) return "forbidden";
    if (this.#refusal === ErrorCode.SIGN_IN_REQUIRED) return "sign_in_required";
    if (code === CloseCode.NORMAL) return "left";
    if (code === CloseCode.GOING_AWAY) return "server_stopped";
    return this.#participantId === null ? "unreachable" : "disconnected";
  }

  /**
   * @param {string} id
   * @param {boolean} ok
   */
  #settle(id, ok) {
    const resolve = this.#pending.get(id);
    this.#pending.delete(id);
    resolve?.(ok);
  }

  /** @param {unknown} data */
  #receive(data) {
    if (typeof data !== "string") return;
    /** @type {ServerMessage} */
    const message = JSON.parse(data);
    switch (message.type) {
      case ServerType.WELCOME:
        this.#lostAt = null;
        this.#attempt = 0;
        this.#resumeToken = message.resume_token;
        this.#participantId = message.participant_id;
        break;
      case ServerType.GOODBYE:
        this.#ending = true;
        this.#goodbye = message.reason;
        break;
      case ServerType.ACK:
        this.#settle(message.ref, true);
        break;
      case ServerType.PONG:
        if (message.ref) this.#settle(message.ref, true);
        break;
      case ServerType.ERROR:
        if (message.ref === HELLO_ID) this.#refusal = message.code;
        if (this.reconnecting && message.code === ErrorCode.UNAVAILABLE) {
          // The room's node cannot be reached yet: try again on the next attempt.
          this.#ws?.close(CloseCode.RECONNECTING, "retrying");
        } else if (this.reconnecting) {
          // Refused while coming back (the room is locked now, or full...): stop trying.
          this.#ending = true;
          this.#ws?.close();
        }
        if (message.ref) this.#settle(message.ref, false);
        break;
      default:
        break;
    }
    this.onMessage(message);
    if (message.type === ServerType.ERROR && message.ref === HELLO_ID && this.#participantId === null) {
      // A first join refused: the server would keep the socket until its hello timeout (about
      // 10 s), so end it here and report the refusal at once; joining again starts afresh.
      const ws = this.#ws;
      if (ws) {
        this.#ending = true;
        ws.close(CloseCode.NORMAL);
        this.#lost(ws, CloseCode.POLICY);
      }
    }
  }
}
