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
 * @typedef {"publish" | "subscribe"} PeerRole
 */

export class Connection {
  /**
   * @param {string} room the room name as in the URL
   * @param {string} name the display name
   */
  constructor(room, name) {
    this.room = room;
    this.name = name;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {string | null} */
    this.participantId = null;
    /** @type {Map<string, ParticipantInfo>} everyone in the room, this participant included */
    this.participants = new Map();
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {RTCPeerConnection | null} */
    this.publishPc = null;
    /** @type {RTCPeerConnection | null} */
    this.subscribePc = null;
    /** @type {{audio: RTCRtpSender | null, video: RTCRtpSender | null}} */
    this.senders = { audio: null, video: null };
    /** @type {{audio: MediaStreamTrack | null, video: MediaStreamTrack | null}} what is sent */
    this.tracks = { audio: null, video: null };

    /** @type {(welcome: WelcomeMessage) => void} */
    this.onWelcome = () => {};
    /** @type {(participants: Map<string, ParticipantInfo>) => void} */
    this.onRoster = () => {};
    /** @type {(participantId: string, track: MediaStreamTrack) => void} a remote track arrived */
    this.onTrack = () => {};
    /** @type {(participantId: string, track: MediaStreamTrack) => void} a remote track went away */
    this.onTrackRemoved = () => {};
    /** @type {(role: PeerRole, state: RTCPeerConnectionState) => void} */
    this.onMediaState = () => {};
    /** @type {(error: ErrorMessage) => void} */
    this.onError = () => {};
    /** @type {(code: number, reason: string) => void} close code as sent by the server, 1006 if none */
    this.onClose = () => {};
    /** @type {Promise<void>} serialises subscribe negotiations */
    this._subscribeQueue = Promise.resolve();
  }

  /** Open the WebSocket and say hello. */
  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.send({ type: ClientType.HELLO, version: PROTOCOL_VERSION, room: this.room, name: this.name });
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
    this.tracks = { audio, video };
    const pc = this.#newPeer("publish");
    this.publishPc = pc;
    const stream = new MediaStream([audio, video].filter((t) => t !== null));
    this.senders.audio = pc.addTransceiver(audio ?? "audio", { direction: "sendonly", streams: [stream] }).sender;
    this.senders.video = pc.addTransceiver(video ?? "video", { direction: "sendonly", streams: [stream] }).sender;
    await pc.setLocalDescription();
    const sdp = pc.localDescription?.sdp ?? "";
    this.send({ type: ClientType.OFFER, pc: "publish", sdp });
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
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
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
        const owner = stream.id;
        this.onTrack(owner, event.track);
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
  }

  /** @param {unknown} data */
  #receive(data) {
    if (typeof data !== "string") return;
    /** @type {ServerMessage} */
    const message = JSON.parse(data);
    switch (message.type) {
      case ServerType.WELCOME:
        this.participantId = message.participant_id;
        this.iceServers = message.ice_servers.map((s) => ({
          urls: s.urls,
          ...(s.username ? { username: s.username } : {}),
          ...(s.credential ? { credential: s.credential } : {}),
        }));
        this.participants = new Map(message.participants.map((p) => [p.id, p]));
        this.onWelcome(message);
        this.onRoster(this.participants);
        break;
      case ServerType.PARTICIPANT_JOINED:
      case ServerType.PARTICIPANT_UPDATED:
        this.participants.set(message.participant.id, message.participant);
        this.onRoster(this.participants);
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
