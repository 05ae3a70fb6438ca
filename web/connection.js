// @ts-check
/**
 * The signalling connection to a Veche server: WebSocket and (from the media issue on)
 * RTCPeerConnections. No DOM here; the UI listens through the `on*` callbacks.
 */
import { ClientType, PROTOCOL_VERSION, ServerType } from "./protocol.gen.js";

/**
 * @typedef {import("./protocol.gen.js").ServerMessage} ServerMessage
 * @typedef {import("./protocol.gen.js").ClientMessage} ClientMessage
 * @typedef {import("./protocol.gen.js").ParticipantInfo} ParticipantInfo
 * @typedef {import("./protocol.gen.js").WelcomeMessage} WelcomeMessage
 * @typedef {import("./protocol.gen.js").ErrorMessage} ErrorMessage
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
    /** @type {(welcome: WelcomeMessage) => void} */
    this.onWelcome = () => {};
    /** @type {(participants: Map<string, ParticipantInfo>) => void} */
    this.onRoster = () => {};
    /** @type {(error: ErrorMessage) => void} */
    this.onError = () => {};
    /** @type {(code: number, reason: string) => void} close code as sent by the server, 1006 if none */
    this.onClose = () => {};
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

  /** @param {unknown} data */
  #receive(data) {
    if (typeof data !== "string") return;
    /** @type {ServerMessage} */
    const message = JSON.parse(data);
    switch (message.type) {
      case ServerType.WELCOME:
        this.participantId = message.participant_id;
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
      case ServerType.ERROR:
        this.onError(message);
        break;
      default:
        break;
    }
  }
}
