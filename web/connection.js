// @ts-check
/**
 * A participation in a Veche room: the room as the server describes it, and two
 * RTCPeerConnections on top of the signalling channel (signalling.js). No DOM here; the UI
 * listens through the `on*` callbacks.
 *
 * - `publish`: this participant's microphone, camera and screen. The client offers.
 * - `subscribe`: everyone else's tracks. The server offers, again whenever tracks come or go;
 *   each remote stream's id is the id of the participant it comes from.
 */
import { ClientType, ErrorCode, ServerType } from "./protocol.gen.js";
import { Signalling } from "./signalling.js";

/**
 * Camera video in three layers (simulcast, lowest first): the server sends each viewer the one
 * that suits the size it shows the video at. A shared screen is sent as one layer.
 */
const CAMERA_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", maxBitrate: 1_500_000 },
];

/**
 * Each camera layer in three temporal layers (7.5, 15 and 30 fps nested in one stream), so that
 * an overloaded server can send a viewer fewer frames a second without a keyframe.
 */
const TEMPORAL_MODE = "L1T3";

/**
 * Whether this browser encodes VP8 in temporal layers: it lists the mode among VP8's
 * `scalabilityModes` (Chromium does; where the list is missing, it is not asked).
 * @returns {boolean}
 */
function temporalLayers() {
  if (typeof RTCRtpSender.getCapabilities !== "function") return false;
  const codecs = RTCRtpSender.getCapabilities("video")?.codecs ?? [];
  return codecs.some(
    (codec) =>
      codec.mimeType.toLowerCase() === "video/vp8" &&
      /** @type {{scalabilityModes?: string[]}} */ (codec).scalabilityModes?.includes(TEMPORAL_MODE),
  );
}

/**
 * Add the camera's sender, in layers where the browser simulcasts (Chromium and Firefox both take
 * the encodings as given, lowest first, and name each layer's packets by rid; a browser that
 * refuses the encodings sends one layer), each in temporal layers where the browser offers them
 * (or one frame rate, if it refuses them).
 * @param {RTCPeerConnection} pc
 * @param {MediaStreamTrack | null} video
 * @param {MediaStream} stream
 * @returns {RTCRtpSender}
 */
function addCamera(pc, video, stream) {
  /** @type {RTCRtpTransceiverInit} */
  const init = { direction: "sendonly", streams: [stream] };
  const layered = CAMERA_LAYERS.map((layer) => ({ ...layer, scalabilityMode: TEMPORAL_MODE }));
  for (const sendEncodings of temporalLayers() ? [layered, CAMERA_LAYERS] : [CAMERA_LAYERS]) {
    try {
      return pc.addTransceiver(video ?? "video", { ...init, sendEncodings }).sender;
    } catch {
      // fewer features below
    }
  }
  return pc.addTransceiver(video ?? "video", init).sender;
}

/** Milliseconds to wait for the answer to a publish offer before offering again anyway. */
const ANSWER_TIMEOUT = 10000;
/** The `id` of every `react`, so that a page can tell a refused reaction (too many) from other errors. */
export const REACT_ID = "react";

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

/**
 * @typedef {import("./protocol.gen.js").ServerMessage} ServerMessage
 * @typedef {import("./protocol.gen.js").ClientMessage} ClientMessage
 * @typedef {import("./protocol.gen.js").ParticipantInfo} ParticipantInfo
 * @typedef {import("./protocol.gen.js").WelcomeMessage} WelcomeMessage
 * @typedef {import("./protocol.gen.js").ErrorMessage} ErrorMessage
 * @typedef {import("./protocol.gen.js").ChatEntry} ChatEntry
 * @typedef {import("./protocol.gen.js").RoomState} RoomState
 * @typedef {import("./protocol.gen.js").WaitingInfo} WaitingInfo
 * @typedef {import("./protocol.gen.js").IceServer} IceServer
 * @typedef {import("./protocol.gen.js").ShownTile} ShownTile
 * @typedef {import("./signalling.js").CloseReason} CloseReason
 * @typedef {"publish" | "subscribe"} PeerRole
 * @typedef {"microphone" | "camera" | "screen"} Source
 */

export class Connection {
  /** @type {Promise<void>} serialises subscribe negotiations */
  #subscribeQueue = Promise.resolve();
  /** @type {Promise<void>} serialises publish negotiations: an offer waits for the last answer */
  #publishQueue = Promise.resolve();
  /** @type {() => void} ends the wait for the answer to the last publish offer */
  #publishAnswered = () => {};
  /** @type {ShownTile[] | null} the remote videos this page shows, as last said (`view`) */
  #view = null;

  /**
   * @param {string} room the room name as in the URL
   * @param {string} name the display name
   * @param {string | null} [token] a join token, where the server requires one
   */
  constructor(room, name, token = null) {
    /** The signalling channel this connection negotiates over. */
    this.signalling = new Signalling({ room, name, token, receiveCodecs });
    this.signalling.onMessage = (message) => this.#receive(message);
    this.signalling.onReconnecting = (attempt) => {
      this.#closePeers();
      this.onReconnecting(attempt);
    };
    this.signalling.onClose = (reason, code) => {
      this.#closePeers();
      this.onClose(reason, code);
    };
    /** @type {Map<string, ParticipantInfo>} everyone in the room, this participant included */
    this.participants = new Map();
    /** @type {RoomState | null} */
    this.settings = null;
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

    /** @type {(welcome: WelcomeMessage) => void} in the room (again, after a reconnection) */
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
    /** @type {(request: "unmute", by: string) => void} a moderator asks this participant something */
    this.onAsked = () => {};
    /** @type {(ready: import("./protocol.gen.js").RecordingReadyMessage) => void} moderators: a recording is written */
    this.onRecordingReady = () => {};
    /** Whether this participant may record on this server (`welcome.can_record`). */
    this.canRecord = false;
    /** @type {(forHost: boolean) => void} this participant waits in the lobby, or (`forHost`) until a host is present */
    this.onWaiting = () => {};
    /** @type {(attempt: number) => void} the connection was lost; reconnection attempt `attempt` is under way */
    this.onReconnecting = () => {};
    /** @type {(reason: CloseReason, code: number) => void} the participation ended for good */
    this.onClose = () => {};
  }

  /** This participant's id, from the last welcome; null until then. */
  get participantId() {
    return this.signalling.participantId;
  }

  /** The secret to come back as the same participant, from the last welcome. */
  get resumeToken() {
    return this.signalling.resumeToken;
  }

  /** Whether the connection is lost and being re-established. */
  get reconnecting() {
    return this.signalling.reconnecting;
  }

  /**
   * Open the signalling connection and say hello (see {@link Signalling#connect}).
   * @param {string} [password] the room's password, if it has one
   */
  connect(password) {
    this.signalling.connect(password);
  }

  /** Try now (the browser says the network is back), without waiting for the next attempt. */
  retryNow() {
    this.signalling.retryNow();
  }

  /** Leave the room; `onClose("left")` follows. */
  leave() {
    this.signalling.leave();
  }

  /**
   * Send one protocol message.
   * @param {ClientMessage} message
   */
  send(message) {
    this.signalling.send(message);
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
    this.senders.video = addCamera(pc, video, stream);
    await this.#offerPublish();
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
   * Share a screen: ask the server (one sharer at a time), then send the track. Resolves to
   * false when the server refuses (someone else is sharing).
   * @param {MediaStreamTrack} track from getDisplayMedia
   * @returns {Promise<boolean>}
   */
  async shareScreen(track) {
    const granted = await this.signalling.request({ type: ClientType.SCREEN_SHARE, active: true });
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
   * Tell others whether the microphone / camera is on.
   * @param {{audio?: boolean, video?: boolean}} state
   */
  update(state) {
    this.send({ type: ClientType.UPDATE, ...state });
  }

  /**
   * @param {string} text
   * @param {"everyone" | "moderators"} [to] `moderators`: a private message to them
   */
  chat(text, to = "everyone") {
    this.send({ type: ClientType.CHAT, text, ...(to === "moderators" ? { to } : {}) });
  }

  /** @param {boolean} raised */
  raiseHand(raised) {
    this.send({ type: ClientType.HAND, raised });
  }

  /**
   * Show a reaction; too many at once are refused with an `error` whose `ref` is {@link REACT_ID}.
   * @param {import("./protocol.gen.js").ReactMessage["emoji"]} emoji
   */
  react(emoji) {
    this.send({ type: ClientType.REACT, emoji, id: REACT_ID });
  }

  /**
   * @param {import("./protocol.gen.js").ModerateMessage["action"]} action
   * @param {string} participantId
   */
  moderate(action, participantId) {
    this.send({ type: ClientType.MODERATE, action, participant_id: participantId });
  }

  /**
   * Mute every participant who is not a moderator, or lower every raised hand (moderators).
   * @param {"mute" | "lower_hand"} action
   */
  moderateAll(action) {
    this.send({ type: ClientType.MODERATE_ALL, action });
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

  /**
   * Say which remote videos this page shows, and how large (`view`): only those are sent.
   * Said again after every `welcome` (a new connection, or the server restarted).
   * @param {ShownTile[]} tiles
   */
  view(tiles) {
    this.#view = tiles;
    if (this.participantId) this.send({ type: ClientType.VIEW, tiles });
  }

  /** End the meeting for everyone (moderators). */
  endMeeting() {
    this.send({ type: ClientType.END_MEETING });
  }

  /**
   * Offer the publish connection's current state, once the answer to any earlier offer has
   * been applied; resolves when the offer is sent.
   * @returns {Promise<void>}
   */
  #offerPublish() {
    return new Promise((sent) => {
      this.#publishQueue = this.#publishQueue.then(() => this.#negotiatePublish(sent)).catch(() => sent());
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
      this.#publishAnswered = resolve;
      setTimeout(resolve, ANSWER_TIMEOUT);
    });
    this.send({ type: ClientType.OFFER, pc: "publish", sdp: pc.localDescription?.sdp ?? "", sources });
    sent();
    await answered;
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
    this.#publishAnswered();
    this.publishPc = null;
    this.subscribePc = null;
    this.senders = { audio: null, video: null, screen: null };
  }

  /** @param {ServerMessage} message */
  #receive(message) {
    switch (message.type) {
      case ServerType.WELCOME:
        this.settings = message.settings ?? null;
        this.iceServers = rtcIceServers(message.ice_servers);
        this.iceTransportPolicy = message.ice_transport_policy === "relay" ? "relay" : "all";
        this.canRecord = Boolean(message.can_record);
        this.participants = new Map(message.participants.map((p) => [p.id, p]));
        this.onWelcome(message);
        this.onRoster(this.participants);
        if (this.#view) this.send({ type: ClientType.VIEW, tiles: this.#view });
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
      case ServerType.ICE_SERVERS:
        // Fresh TURN credentials: for connections set up from now on, and ICE restarts.
        this.iceServers = rtcIceServers(message.ice_servers);
        for (const pc of [this.publishPc, this.subscribePc]) {
          try {
            pc?.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers });
          } catch {
            // A browser that cannot change them on a live connection keeps the old ones there.
          }
        }
        break;
      case ServerType.LOBBY_UPDATED:
        this.onLobby(message.waiting);
        break;
      case ServerType.WAITING:
        this.onWaiting(message.for_host ?? false);
        break;
      case ServerType.ASKED:
        this.onAsked(message.request, message.by);
        break;
      case ServerType.RECORDING_READY:
        this.onRecordingReady(message);
        break;
      case ServerType.ANSWER:
        if (message.pc === "publish") {
          this.publishPc
            ?.setRemoteDescription({ type: "answer", sdp: message.sdp })
            .catch((error) => {
              this.onError({ type: "error", code: "bad_sdp", message: String(error) });
            })
            .finally(() => this.#publishAnswered());
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
          this.#subscribeQueue = this.#subscribeQueue
            .then(() => this.#answerSubscribe(sdp))
            .catch((error) => this.onError({ type: "error", code: "bad_sdp", message: String(error) }));
        }
        break;
      case ServerType.ERROR:
        if (message.code === ErrorCode.MEDIA_FAILED) {
          // The server started this connection (or both) afresh: so does this side. A new
          // subscribe connection is made for the server's next offer.
          if (message.pc === "subscribe") {
            this.subscribePc?.close();
            this.subscribePc = null;
          } else if (message.pc === "publish") {
            this.publishPc?.close();
            this.publishPc = null;
            this.#publishAnswered();
            this.publish(this.tracks.audio, this.tracks.video);
          } else {
            this.#closePeers();
            this.publish(this.tracks.audio, this.tracks.video);
          }
        }
        this.onError(message);
        break;
      default:
        break;
    }
  }
}

/**
 * The server's ICE servers as `RTCConfiguration.iceServers`.
 * @param {Array<IceServer>} servers
 * @returns {RTCIceServer[]}
 */
function rtcIceServers(servers) {
  return servers.map((s) => ({
    urls: s.urls,
    ...(s.username ? { username: s.username } : {}),
    ...(s.credential ? { credential: s.credential } : {}),
  }));
}
