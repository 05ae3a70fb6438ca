// @ts-check
/**
 * The connection to a Veche server: signalling over a WebSocket and two RTCPeerConnections.
 * No DOM here; the UI listens through the `on*` callbacks.
 *
 * - `publish`: this participant's microphone and camera. The client offers.
 * - `subscribe`: everyone else's tracks. The server offers, again whenever tracks come or go;
 *   each remote stream's id is the id of the participant it comes from.
 */
import { ClientType, ErrorCode, PROTOCOL_VERSION, ServerType } from "./protocol.gen.js";

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
    /** @type {(code: number, reason: string) => void} close code as sent by the server, 1006 if none */
    this.onClose = () => {};
    /** @type {Promise<void>} serialises subscribe negotiations */
    this._subscribeQueue = Promise.resolve();
  }

  /**
   * Open the WebSocket and say hello.
   * @param {string} [password] the room's password, if it has one
   */
  connect(password) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ room: this.room });
    if (this.token) query.set("token", this.token);
    const ws = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.send({
        type: ClientType.HELLO,
        version: PROTOCOL_VERSION,
        room: this.room,
        name: this.name,
        ...(password ? { password } : {}),
      });
    });
    ws.addEventListener("message", (event) => this.#receive(event.data));
    ws.addEventListener("close", (event) => {
      this.ws = null;
      this.#closePeers();
      this.onClose(event.code, event.reason);
    });
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

  async #offerPublish() {
    const pc = this.publishPc;
    if (!pc) return;
    await pc.setLocalDescription();
    /** @type {Record<string, Source>} */
    const sources = {};
    for (const transceiver of pc.getTransceivers()) {
      if (!transceiver.mid) continue;
      if (transceiver.sender === this.senders.screen) sources[transceiver.mid] = "screen";
      else sources[transceiver.mid] = transceiver.receiver.track.kind === "audio" ? "microphone" : "camera";
    }
    this.send({ type: ClientType.OFFER, pc: "publish", sdp: pc.localDescription?.sdp ?? "", sources });
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

  /** Leave the room; the server closes the socket. */
  leave() {
    this.send({ type: ClientType.LEAVE });
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
        this.onGoodbye(message.reason);
        break;
      case ServerType.PARTICIPANT_LEFT:
        this.participants.delete(message.participant_id);
        this.onRoster(this.participants);
        break;
      case ServerType.ANSWER:
        if (message.pc === "publish") {
          this.publishPc?.setRemoteDescription({ type: "answer", sdp: message.sdp }).catch((error) => {
            this.onError({ type: "error", code: "bad_sdp", message: String(error) });
          });
        }
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
