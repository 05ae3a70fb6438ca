// @ts-check
/**
 * The connection to a Veche server: signalling over a WebSocket and two RTCPeerConnections.
 * No DOM here; the UI listens through the `on*` callbacks.
 *
 * - `publish`: this participant's microphone and camera. The client offers.
 * - `subscribe`: everyone else's tracks. The server offers, again whenever tracks come or go;
 *   each remote stream's id is the id of the participant it comes from.
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
/** Close codes after which trying again cannot help: the client said leave, broke a rule, sent too much. */
const FINAL_CLOSE_CODES = new Set(/** @type {number[]} */ ([CloseCode.NORMAL, CloseCode.POLICY, CloseCode.TOO_BIG]));

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
 * MIME types this browser can decode (`video/VP8`, `audio/opus`...), told to the server in
 * `hello` so that everyone's video comes in a codec this browser plays. Undefined where the
 * browser cannot say (the server then assumes it plays whatever is forwarded).
 * @returns {string[] | undefined}
 */
export function receiveCodecs() {
  if (typeof RTCRtpReceiver.getCapabilities !== "function") return undefined;
  const names = new Set();
  for (const kind of ["audio", "video"]) {
    for (const codec of RTCRtpReceiver.getCapabilities(kind)?.codecs ?? []) names.add(codec.mimeType);
  }
  return [...names].slice(0, 64);
}

/** Milliseconds to wait for the answer to a publish offer before offering again anyway. */
const ANSWER_TIMEOUT = 10000;

/**
 * @typedef {import("./protocol.gen.js").ServerMessage} ServerMessage
 * @typedef {import("./protocol.gen.js").ClientMessage} ClientMessage
 * @typedef {import("./protocol.gen.js").ParticipantInfo} ParticipantInfo
 * @typedef {import("./protocol.gen.js").WelcomeMessage} WelcomeMessage
 * @typedef {import("./protocol.gen.js").ErrorMessage} ErrorMessage
 * @typedef {import("./protocol.gen.js").ChatEntry} ChatEntry
 * @typedef {import("./protocol.gen.js").RoomState} RoomState
 * @typedef {import("./protocol.gen.js").WaitingInfo} WaitingInfo
 * @typedef {"publish" | "subscribe"} PeerRole
 * @typedef {"microphone" | "camera" | "screen"} Source
 */

export class Connection {
  /**
   * @param {string} room the room name as in the URL
   * @param {string} name the display name
   * @param {string | null} [token] a join token, where the server requires one
   */
  constructor(room, name, token = null) {
    this.room = room;
    this.name = name;
    this.token = token;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {string | null} */
    this.participantId = null;
    /** @type {Map<string, ParticipantInfo>} everyone in the room, this participant included */
    this.participants = new Map();
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {RTCIceTransportPolicy} */
    this.iceTransportPolicy = "all";
    /** @type {RTCPeerConnection | null} */
    this.publishPc = null;
    /** @type {RTCPeerConnection | null} */
    this.subscribePc = null;
    /** @type {{audio: RTCRtpSender | null, video: RTCRtpSender | null, screen: RTCRtpSender | null}} */
    this.senders = { audio: null, video: null, screen: null };
    /** @type {{audio: MediaStreamTrack | null, video: MediaStreamTrack | null, screen: MediaStreamTrack | null}} what is sent */
    this.tracks = { audio: null, video: null, screen: null };

    /** @type {(welcome: WelcomeMessage) => void} */
    this.onWelcome = () => {};
    /** @type {(participants: Map<string, ParticipantInfo>) => void} */
    this.onRoster = () => {};
    /** @type {(participantId: string, track: MediaStreamTrack, source: Source) => void} a remote track arrived */
    this.onTrack = () => {};
    /** @type {(participantId: string, track: MediaStreamTrack) => void} a remote track went away */
    this.onTrackRemoved = () => {};
    /** @type {(participantId: string, source: Source, codec: string) => void} someone's track is in a codec this browser cannot play */
    this.onTrackUnavailable = () => {};
    /** @type {(role: PeerRole, state: RTCPeerConnectionState) => void} */
    this.onMediaState = () => {};
    /** @type {(error: ErrorMessage) => void} */
    this.onError = () => {};
    /** @type {(entry: ChatEntry) => void} */
    this.onChat = () => {};
    /** @type {(participantId: string, emoji: string) => void} */
    this.onReaction = () => {};
    /** @type {(participantId: string | null) => void} */
    this.onActiveSpeaker = () => {};
    /** @type {(settings: RoomState) => void} */
    this.onRoomUpdated = () => {};
    /** @type {(waiting: WaitingInfo[]) => void} moderators: who waits in the lobby */
    this.onLobby = () => {};
    /** @type {() => void} this participant waits in the lobby */
    this.onWaiting = () => {};
    /** @type {(reason: "removed" | "denied" | "ended" | "replaced") => void} */
    this.onGoodbye = () => {};
    /** @type {RoomState | null} */
    this.settings = null;
    /** @type {Map<string, {resolve: (ok: boolean) => void}>} requests waiting for a verdict */
    this._pending = new Map();
    this._nextId = 1;
    /** @type {(code: number, reason: string) => void} the connection ended for good: close code as sent by the server, 1006 if none */
    this.onClose = () => {};
    /** @type {(attempt: number) => void} the connection was lost; reconnection attempt `attempt` is under way */
    this.onReconnecting = () => {};
    /** @type {string | null} from the last welcome, to come back as the same participant */
    this.resumeToken = null;
    /** @type {string | undefined} */
    this._password = undefined;
    /** the client or the server ended the participation: do not reconnect */
    this._ending = false;
    /** @type {number | null} when the connection was lost (Date.now()), while reconnecting */
    this._lostAt = null;
    this._attempt = 0;
    this._lastHeard = 0;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._pinger = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retry = undefined;
    /** @type {Promise<void>} serialises subscribe negotiations */
    this._subscribeQueue = Promise.resolve();
    /** @type {Promise<void>} serialises publish negotiations: an offer waits for the last answer */
    this._publishQueue = Promise.resolve();
    /** @type {() => void} ends the wait for the answer to the last publish offer */
    this._publishAnswered = () => {};
  }

  /**
   * Open the WebSocket and say hello. A lost connection is reopened with backoff and resumes
   * the same participant (see `onReconnecting`).
   * @param {string} [password] the room's password, if it has one
   */
  connect(password) {
    this._password = password;
    this.#open();
  }

  /** Whether the connection is lost and being re-established. */
  get reconnecting() {
    return this._lostAt !== null;
  }

  #open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ room: this.room });
    if (this.token) query.set("token", this.token);
    const ws = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
    this.ws = ws;
    const opening = setTimeout(() => {
      if (this.ws === ws && ws.readyState === WebSocket.CONNECTING) this.#lost(ws, CloseCode.RECONNECTING);
    }, CONNECT_TIMEOUT);
    ws.addEventListener("open", () => {
      clearTimeout(opening);
      if (this.ws !== ws) return;
      this._lastHeard = Date.now();
      const codecs = receiveCodecs();
      this.send({
        type: ClientType.HELLO,
        version: PROTOCOL_VERSION,
        room: this.room,
        name: this.name,
        ...(codecs ? { receive_codecs: codecs } : {}),
        ...(this._password ? { password: this._password } : {}),
        ...(this.resumeToken ? { resume: this.resumeToken } : {}),
      });
      clearInterval(this._pinger);
      this._pinger = setInterval(() => this.#checkAlive(ws), PING_INTERVAL);
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this._lastHeard = Date.now();
      this.#receive(event.data);
    });
    ws.addEventListener("close", (event) => {
      clearTimeout(opening);
      if (this.ws === ws) this.#lost(ws, event.code, event.reason);
    });
  }

  /**
   * Ping the server; a connection that has been silent too long is given up and reopened
   * (closed with 4000 so the server, if it hears it, keeps this participant for a resume).
   * @param {WebSocket} ws
   */
  #checkAlive(ws) {
    if (this.ws !== ws) return;
    if (Date.now() - this._lastHeard > DEAD_AFTER) this.#lost(ws, CloseCode.RECONNECTING);
    else this.send({ type: ClientType.PING });
  }

  /**
   * A socket ended: reconnect if the participation was lost rather than ended.
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} [reason]
   */
  #lost(ws, code, reason = "") {
    this.ws = null;
    clearInterval(this._pinger);
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      ws.close(CloseCode.RECONNECTING, "reconnecting");
    }
    this.#closePeers();
    const joined = this.participantId !== null;
    const now = Date.now();
    if (this._lostAt === null) this._lostAt = now;
    if (!joined || this._ending || FINAL_CLOSE_CODES.has(code) || now - this._lostAt > RECONNECT_BUDGET) {
      this._lostAt = null;
      this.onClose(code, reason);
      return;
    }
    const attempt = this._attempt++;
    this.onReconnecting(attempt);
    this._retry = setTimeout(() => this.#open(), reconnectDelay(attempt));
  }

  /** Try now (the browser says the network is back), without waiting for the next attempt. */
  retryNow() {
    if (this._lostAt === null || this.ws !== null) return;
    clearTimeout(this._retry);
    this.#open();
  }

  /**
   * Send one protocol message.
   * @param {ClientMessage} message
   */
  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  /**
   * Start publishing. Both an audio and a video sender are created even without tracks, so a
   * device switched on later needs no renegotiation.
   * @param {MediaStreamTrack | null} audio
   * @param {MediaStreamTrack | null} video
   */
  async publish(audio, video) {
    this.tracks = { audio, video, screen: null };
    this.senders.screen = null;
    const pc = this.#newPeer("publish");
    this.publishPc = pc;
    const stream = new MediaStream([audio, video].filter((t) => t !== null));
    this.senders.audio = pc.addTransceiver(audio ?? "audio", { direction: "sendonly", streams: [stream] }).sender;
    this.senders.video = pc.addTransceiver(video ?? "video", { direction: "sendonly", streams: [stream] }).sender;
    await this.#offerPublish();
  }

  /**
   * Offer the publish connection's current state, once the answer to any earlier offer has
   * been applied; resolves when the offer is sent.
   * @returns {Promise<void>}
   */
  #offerPublish() {
    return new Promise((sent) => {
      this._publishQueue = this._publishQueue.then(() => this.#negotiatePublish(sent)).catch(() => sent());
    });
  }

  /** @param {() => void} sent */
  async #negotiatePublish(sent) {
    const pc = this.publishPc;
    if (!pc) return sent();
    await pc.setLocalDescription();
    /** @type {Record<string, Source>} */
    const sources = {};
    for (const transceiver of pc.getTransceivers()) {
      if (!transceiver.mid) continue;
      if (transceiver.sender === this.senders.screen) sources[transceiver.mid] = "screen";
      else sources[transceiver.mid] = transceiver.receiver.track.kind === "audio" ? "microphone" : "camera";
    }
    /** @type {Promise<void>} */
    const answered = new Promise((resolve) => {
      this._publishAnswered = resolve;
      setTimeout(resolve, ANSWER_TIMEOUT);
    });
    this.send({ type: ClientType.OFFER, pc: "publish", sdp: pc.localDescription?.sdp ?? "", sources });
    sent();
    await answered;
  }

  /**
   * Share a screen: ask the server (one sharer at a time), then send the track. Resolves to
   * false when someone else is sharing.
   * @param {MediaStreamTrack} track from getDisplayMedia
   * @returns {Promise<boolean>}
   */
  async shareScreen(track) {
    const granted = await this.#request({ type: ClientType.SCREEN_SHARE, active: true });
    if (!granted) return false;
    this.tracks.screen = track;
    if (this.senders.screen) {
      await this.senders.screen.replaceTrack(track);
    } else if (this.publishPc) {
      this.senders.screen = this.publishPc.addTransceiver(track, { direction: "sendonly" }).sender;
      await this.#offerPublish();
    }
    return true;
  }

  /** Stop sharing the screen (the sender stays for next time). */
  async stopScreen() {
    this.tracks.screen = null;
    await this.senders.screen?.replaceTrack(null);
    this.send({ type: ClientType.SCREEN_SHARE, active: false });
  }

  /**
   * Send a request and wait for the server's verdict: an error answering it (false), or the
   * participant_updated of this participant that follows it (true).
   * @param {ClientMessage} message
   * @returns {Promise<boolean>}
   */
  #request(message) {
    const id = `r${this._nextId++}`;
    return new Promise((resolve) => {
      this._pending.set(id, { resolve });
      this.send({ ...message, id });
    });
  }

  /** @param {string} text */
  chat(text) {
    this.send({ type: ClientType.CHAT, text });
  }

  /** @param {boolean} raised */
  raiseHand(raised) {
    this.send({ type: ClientType.HAND, raised });
  }

  /** @param {import("./protocol.gen.js").ReactMessage["emoji"]} emoji */
  react(emoji) {
    this.send({ type: ClientType.REACT, emoji });
  }

  /**
   * @param {import("./protocol.gen.js").ModerateMessage["action"]} action
   * @param {string} participantId
   */
  moderate(action, participantId) {
    this.send({ type: ClientType.MODERATE, action, participant_id: participantId });
  }

  /** @param {{locked?: boolean, lobby?: boolean, password?: string, moderator_must_allow?: boolean}} settings */
  configure(settings) {
    this.send({ type: ClientType.CONFIGURE, ...settings });
  }

  /**
   * Let someone (or, with `null`, everyone) in from the lobby, or turn them away.
   * @param {boolean} admit
   * @param {string | null} participantId
   */
  decide(admit, participantId) {
    const target = participantId ? { participant_id: participantId } : { all: true };
    this.send({ type: admit ? ClientType.ADMIT : ClientType.DENY, ...target });
  }

  /**
   * Start or stop recording the room (moderators).
   * @param {boolean} active
   */
  record(active) {
    this.send({ type: ClientType.RECORD, active });
  }

  /** End the meeting for everyone (moderators). */
  endMeeting() {
    this.send({ type: ClientType.END_MEETING });
  }

  /**
   * Send another track (a different device), or nothing (`null`), without renegotiating.
   * @param {"audio" | "video"} kind
   * @param {MediaStreamTrack | null} track
   */
  async replaceTrack(kind, track) {
    this.tracks[kind] = track;
    await this.senders[kind]?.replaceTrack(track);
  }

  /**
   * Tell others whether the microphone / camera is on.
   * @param {{audio?: boolean, video?: boolean}} state
   */
  update(state) {
    this.send({ type: ClientType.UPDATE, ...state });
  }

  /** Leave the room; the server closes the socket. While reconnecting, stop trying. */
  leave() {
    this._ending = true;
    if (this.ws) {
      this.send({ type: ClientType.LEAVE });
    } else if (this._lostAt !== null) {
      clearTimeout(this._retry);
      this._lostAt = null;
      this.onClose(CloseCode.NORMAL, "left");
    }
  }

  /**
   * @param {PeerRole} role
   * @returns {RTCPeerConnection}
   */
  #newPeer(role) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: "max-bundle",
    });
    pc.addEventListener("icecandidate", (event) => {
      const candidate = event.candidate;
      if (!candidate) return;
      this.send({
        type: ClientType.CANDIDATE,
        pc: role,
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid,
        sdp_mline_index: candidate.sdpMLineIndex,
      });
    });
    pc.addEventListener("connectionstatechange", () => this.onMediaState(role, pc.connectionState));
    return pc;
  }

  /** @param {string} sdp */
  async #answerSubscribe(sdp) {
    let pc = this.subscribePc;
    if (!pc) {
      pc = this.#newPeer("subscribe");
      this.subscribePc = pc;
      pc.addEventListener("track", (event) => {
        const stream = event.streams[0];
        if (!stream) return;
        // A shared screen comes as "<participant id>~screen".
        const [owner, kind] = stream.id.split("~");
        this.onTrack(owner, event.track, kind === "screen" ? "screen" : event.track.kind === "audio" ? "microphone" : "camera");
        stream.addEventListener("removetrack", (removed) => this.onTrackRemoved(owner, removed.track));
      });
    }
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription();
    this.send({ type: ClientType.ANSWER, pc: "subscribe", sdp: pc.localDescription?.sdp ?? "" });
  }

  #closePeers() {
    for (const pc of [this.publishPc, this.subscribePc]) pc?.close();
    this._publishAnswered();
    this.publishPc = null;
    this.subscribePc = null;
    this.senders = { audio: null, video: null, screen: null };
  }

  /** @param {unknown} data */
  #receive(data) {
    if (typeof data !== "string") return;
    /** @type {ServerMessage} */
    const message = JSON.parse(data);
    switch (message.type) {
      case ServerType.WELCOME:
        this._lostAt = null;
        this._attempt = 0;
        this.resumeToken = message.resume_token;
        this.participantId = message.participant_id;
        this.settings = message.settings ?? null;
        this.iceServers = message.ice_servers.map((s) => ({
          urls: s.urls,
          ...(s.username ? { username: s.username } : {}),
          ...(s.credential ? { credential: s.credential } : {}),
        }));
        this.iceTransportPolicy = message.ice_transport_policy === "relay" ? "relay" : "all";
        this.participants = new Map(message.participants.map((p) => [p.id, p]));
        this.onWelcome(message);
        this.onRoster(this.participants);
        break;
      case ServerType.PARTICIPANT_JOINED:
      case ServerType.PARTICIPANT_UPDATED:
        this.participants.set(message.participant.id, message.participant);
        if (message.participant.id === this.participantId && message.participant.screen) {
          for (const [id, pending] of this._pending) {
            pending.resolve(true);
            this._pending.delete(id);
          }
        }
        this.onRoster(this.participants);
        break;
      case ServerType.CHAT_POSTED:
        this.onChat(message.entry);
        break;
      case ServerType.REACTED:
        this.onReaction(message.participant_id, message.emoji);
        break;
      case ServerType.ACTIVE_SPEAKER:
        this.onActiveSpeaker(message.participant_id ?? null);
        break;
      case ServerType.ROOM_UPDATED:
        this.settings = message.settings;
        this.onRoomUpdated(message.settings);
        break;
      case ServerType.LOBBY_UPDATED:
        this.onLobby(message.waiting);
        break;
      case ServerType.WAITING:
        this.onWaiting();
        break;
      case ServerType.GOODBYE:
        this._ending = true;
        this.onGoodbye(message.reason);
        break;
      case ServerType.PARTICIPANT_LEFT:
        this.participants.delete(message.participant_id);
        this.onRoster(this.participants);
        break;
      case ServerType.ANSWER:
        if (message.pc === "publish") {
          this.publishPc
            ?.setRemoteDescription({ type: "answer", sdp: message.sdp })
            .catch((error) => {
              this.onError({ type: "error", code: "bad_sdp", message: String(error) });
            })
            .finally(() => this._publishAnswered());
        }
        break;
      case ServerType.RENEGOTIATE:
        // The server will answer with another codec (someone who joined cannot play this one).
        this.#offerPublish();
        break;
      case ServerType.TRACK_UNAVAILABLE:
        this.onTrackUnavailable(message.participant_id, message.source, message.codec);
        break;
      case ServerType.OFFER:
        if (message.pc === "subscribe") {
          const sdp = message.sdp;
          this._subscribeQueue = this._subscribeQueue
            .then(() => this.#answerSubscribe(sdp))
            .catch((error) => this.onError({ type: "error", code: "bad_sdp", message: String(error) }));
        }
        break;
      case ServerType.ERROR:
        if (this.reconnecting && message.code === ErrorCode.UNAVAILABLE) {
          // The room's node cannot be reached yet: try again on the next attempt.
          this.ws?.close(CloseCode.RECONNECTING, "retrying");
        } else if (this.reconnecting) {
          // Refused while coming back (the room is locked now, or full...): stop trying.
          this._ending = true;
          this.ws?.close();
        }
        if (message.ref && this._pending.has(message.ref)) {
          this._pending.get(message.ref)?.resolve(false);
          this._pending.delete(message.ref);
        }
        if (message.code === ErrorCode.MEDIA_FAILED) {
          // The server released this participant's media: start both connections afresh.
          this.#closePeers();
          this.publish(this.tracks.audio, this.tracks.video);
        }
        this.onError(message);
        break;
      default:
        break;
    }
  }
}
