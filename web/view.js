// @ts-check
/**
 * What this page shows of the call, reported to the server as `view`: the remote tiles (and the
 * shared screen) on screen now, with their size. The server forwards video only for those, so
 * a tile scrolled out of sight, a hidden tab or a page of a large meeting costs no bandwidth.
 * Reports are coalesced (one at most every `VIEW_DELAY` ms) and sent only when they change.
 */

/** @typedef {import("./protocol.gen.js").ShownTile} ShownTile */

/** Milliseconds changes are gathered before one report. */
const VIEW_DELAY = 150;
/** Sizes are rounded up to this many CSS pixels, so that small resizes do not report. */
const SIZE_STEP = 40;
/** The size reported for every tile in low-bandwidth mode (the smallest simulcast layer). */
const LOW_WIDTH = 160;
const LOW_HEIGHT = 90;

export class ViewReporter {
  /** @type {(tiles: ShownTile[]) => void} */
  #send;
  /** @type {Set<HTMLElement>} watched elements now intersecting the viewport */
  #visible = new Set();
  /** @type {Set<HTMLElement>} every watched element */
  #watched = new Set();
  /** @type {PictureInPictureWindow | null} the picture-in-picture window, while open */
  #pipWindow = null;
  /** @type {IntersectionObserver} */
  #intersections;
  /** @type {ResizeObserver} */
  #sizes;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;
  /** the last report sent, as JSON */
  #last = "";
  /** @type {"auto" | "low" | "audio"} what the user chose to receive: videos as shown, each
   * in its smallest layer (low bandwidth), or none (audio only) */
  #mode = "auto";

  /** @param {(tiles: ShownTile[]) => void} send */
  constructor(send) {
    this.#send = send;
    this.#intersections = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const element = /** @type {HTMLElement} */ (entry.target);
        if (entry.isIntersecting) this.#visible.add(element);
        else this.#visible.delete(element);
      }
      this.schedule();
    });
    this.#sizes = new ResizeObserver(() => this.schedule());
    document.addEventListener("visibilitychange", () => this.schedule());
    // The picture-in-picture window stays on screen while the tab is hidden or its tile is not
    // on the page shown.
    document.addEventListener(
      "enterpictureinpicture",
      (event) => {
        this.#pipWindow = /** @type {PictureInPictureEvent} */ (event).pictureInPictureWindow;
        this.#pipWindow.addEventListener("resize", () => this.schedule());
        this.schedule();
      },
      true,
    );
    document.addEventListener(
      "leavepictureinpicture",
      () => {
        this.#pipWindow = null;
        this.schedule();
      },
      true,
    );
  }

  /**
   * Report on `element` (a tile or the stage), whose `data-participant-id` (and `data-source`,
   * `camera` by default) say whose video it shows.
   * @param {HTMLElement} element
   */
  watch(element) {
    this.#watched.add(element);
    this.#intersections.observe(element);
    this.#sizes.observe(element);
  }

  /** @param {HTMLElement} element */
  unwatch(element) {
    this.#watched.delete(element);
    this.#intersections.unobserve(element);
    this.#sizes.unobserve(element);
    this.#visible.delete(element);
    this.schedule();
  }

  /** Report soon (a change the observers cannot see, such as a new owner of the stage). */
  schedule() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#report();
    }, VIEW_DELAY);
  }

  /**
   * Receive videos as shown (`auto`), each as small as the sender makes it (`low`), or none
   * (`audio`).
   * @param {"auto" | "low" | "audio"} mode
   */
  setMode(mode) {
    this.#mode = mode;
    this.schedule();
  }

  /** Send the next report even if it is unchanged (a new connection knows nothing yet). */
  forget() {
    this.#last = "";
    this.schedule();
  }

  #report() {
    /** @type {ShownTile[]} */
    const tiles = [];
    if (this.#mode !== "audio") {
      // A hidden tab shows nothing, except the tile in the picture-in-picture window (which is
      // shown even when its tile is not on the page shown, at the larger of the two sizes).
      const hidden = document.visibilityState === "hidden";
      const pip = document.pictureInPictureElement;
      const pipTile = [...this.#watched].find((element) => pip && element.contains(pip)) ?? null;
      const shown = new Set(this.#visible);
      if (pipTile) shown.add(pipTile);
      for (const element of shown) {
        const participantId = element.dataset.participantId;
        if (!element.isConnected || !participantId) continue;
        const inPip = element === pipTile;
        if (!inPip && (hidden || element.hidden)) continue;
        const width = Math.max(element.clientWidth, inPip ? (this.#pipWindow?.width ?? 0) : 0);
        const height = Math.max(element.clientHeight, inPip ? (this.#pipWindow?.height ?? 0) : 0);
        tiles.push({
          participant_id: participantId,
          source: element.dataset.source === "screen" ? "screen" : "camera",
          // Low bandwidth: say the tile is small, so the smallest layer is sent.
          width: this.#mode === "low" ? LOW_WIDTH : Math.ceil(width / SIZE_STEP) * SIZE_STEP,
          height: this.#mode === "low" ? LOW_HEIGHT : Math.ceil(height / SIZE_STEP) * SIZE_STEP,
        });
      }
    }
    tiles.sort((a, b) => (a.participant_id + a.source).localeCompare(b.participant_id + b.source));
    const json = JSON.stringify(tiles);
    if (json === this.#last) return;
    this.#last = json;
    this.#send(tiles);
  }
}
