// @ts-check
/**
 * The grid's layout: which tiles are on the page shown, in what order, at what size, and the
 * pager under them. Pages hold at most 16 tiles (4 on a phone); yours is first on page one
 * unless self view is hidden; the active speaker is brought onto page one; a pinned tile (or,
 * in speaker view, the active speaker) is featured: large, with the others in a strip. Tiles
 * not on the page shown are hidden, so their video is not sent (see view.js). Tiles take the
 * aspect of the videos they show (so a 4:3 camera fills its tile, uncropped), a default one
 * before any plays. It places what it is given; tiles.js owns the tiles.
 */
import { t } from "./i18n.js";

/** Tiles on one page, on a wide screen and on a phone. */
const PAGE_SIZE = { wide: 16, phone: 4 };
const PHONE = window.matchMedia("(max-width: 37.5rem)");
/** Width over height of a tile before any video plays. */
const ASPECT = { wide: 16 / 9, phone: 4 / 3 };
/** The narrowest and widest tiles a video's aspect makes (a portrait phone camera, a wide screen). */
const ASPECT_RANGE = { min: 9 / 16, max: 16 / 9 };
/** Pixels between tiles (the grid's gap). */
const GAP = 8;

export class GridLayout {
  /** @type {HTMLElement} */
  #grid;
  /** @type {() => string | null} */
  #me;
  /** @type {() => void} */
  #onLayout;
  /** @type {string[]} remote participants' ids, in the order they are placed */
  #order = [];
  #page = 0;
  #pages = 1;
  #count = 0;
  /** @type {string | null} */
  #speaker = null;
  /** @type {string | null} the participant pinned by this page's user */
  pinned = null;
  speakerView = false;
  hideSelf = false;
  /** @type {Map<string, HTMLElement>} as last arranged */
  #tiles = new Map();
  #pager = document.createElement("nav");
  #previous = document.createElement("button");
  #next = document.createElement("button");
  #label = document.createElement("span");
  #selfView = document.createElement("button");

  /**
   * @param {HTMLElement} grid
   * @param {() => string | null} me this participant's id, once known
   * @param {() => void} onLayout tiles were shown or hidden
   */
  constructor(grid, me, onLayout) {
    this.#grid = grid;
    this.#me = me;
    this.#onLayout = onLayout;
    this.#pager.className = "pager";
    this.#pager.hidden = true;
    this.#pager.setAttribute("aria-label", t("grid.pages"));
    /** @type {Array<[HTMLButtonElement, string]>} */
    const buttons = [
      [this.#previous, "pager-previous"],
      [this.#next, "pager-next"],
      [this.#selfView, "pager-self"],
    ];
    for (const [button, name] of buttons) {
      button.type = "button";
      button.className = `button ${name}`;
    }
    this.#previous.textContent = "‹";
    this.#next.textContent = "›";
    this.#label.className = "pager-label";
    this.#label.setAttribute("aria-live", "polite");
    this.#previous.addEventListener("click", () => this.turn(-1));
    this.#next.addEventListener("click", () => this.turn(1));
    this.#selfView.addEventListener("click", () => {
      this.hideSelf = !this.hideSelf;
      this.arrange(this.#tiles);
    });
    this.#pager.append(this.#previous, this.#label, this.#next, this.#selfView);
    grid.after(this.#pager);
    new ResizeObserver(() => this.#size()).observe(grid);
    // A video's size is known (or changed): the tiles may take its aspect.
    grid.addEventListener("resize", () => this.#size(), true);
    grid.addEventListener("loadedmetadata", () => this.#size(), true);
    window.addEventListener("resize", () => this.#size());
    PHONE.addEventListener("change", () => this.arrange(this.#tiles));
  }

  /** The page shown (0 is the first). */
  get page() {
    return this.#page;
  }

  /** @param {number} step */
  turn(step) {
    this.#page = Math.min(Math.max(0, this.#page + step), this.#pages - 1);
    this.arrange(this.#tiles);
  }

  /**
   * The active speaker changed: it is brought onto the first page (in place of the last tile
   * there), and featured in speaker view.
   * @param {string | null} participantId
   */
  setSpeaker(participantId) {
    this.#speaker = participantId;
    this.arrange(this.#tiles);
  }

  /**
   * Place `tiles` (every participant's, by id, in joining order).
   * @param {Map<string, HTMLElement>} tiles
   */
  arrange(tiles) {
    this.#tiles = tiles;
    const me = this.#me();
    const remote = [...tiles.keys()].filter((id) => id !== me);
    this.#order = [...this.#order.filter((id) => tiles.has(id) && id !== me), ...remote.filter((id) => !this.#order.includes(id))];
    if (this.pinned !== null && !tiles.has(this.pinned)) this.pinned = null;
    const remoteSpeaker = this.#speaker !== null && this.#speaker !== me && tiles.has(this.#speaker) ? this.#speaker : null;
    const featured = this.pinned ?? (this.speakerView ? remoteSpeaker : null);
    const phone = PHONE.matches;
    const size = phone ? PAGE_SIZE.phone : PAGE_SIZE.wide;
    const showSelf = me !== null && tiles.has(me) && !this.hideSelf;
    const others = this.#order.filter((id) => id !== featured);
    const firstSlots = Math.max(1, size - (showSelf ? 1 : 0) - (featured ? 1 : 0));
    const otherSlots = Math.max(1, size - (featured ? 1 : 0));
    if (remoteSpeaker && remoteSpeaker !== featured) {
      const at = others.indexOf(remoteSpeaker);
      if (at >= firstSlots) {
        // Swap with the last tile of page one, so that the others keep their places.
        [others[firstSlots - 1], others[at]] = [others[at], /** @type {string} */ (others[firstSlots - 1])];
        this.#order = featured ? [featured, ...others] : others;
      }
    }
    this.#pages = 1 + Math.ceil(Math.max(0, others.length - firstSlots) / otherSlots);
    this.#page = Math.min(this.#page, this.#pages - 1);
    const start = this.#page === 0 ? 0 : firstSlots + (this.#page - 1) * otherSlots;
    const onPage = others.slice(start, start + (this.#page === 0 ? firstSlots : otherSlots));
    const shown = new Set(onPage);
    if (featured) shown.add(featured);
    if (showSelf && me && this.#page === 0) shown.add(me);
    for (const [id, tile] of tiles) {
      tile.hidden = !shown.has(id);
      tile.classList.toggle("featured", id === featured);
      tile.classList.toggle("pinned", id === this.pinned);
      tile.style.order = String(id === featured ? -1 : id === me ? onPage.length : onPage.indexOf(id));
    }
    this.#grid.classList.toggle("has-featured", featured !== null);
    this.#count = shown.size;
    this.#pager.hidden = tiles.size === 0;
    this.#previous.disabled = this.#page === 0;
    this.#next.disabled = this.#page >= this.#pages - 1;
    this.#previous.hidden = this.#next.hidden = this.#pages <= 1;
    this.#previous.setAttribute("aria-label", t("grid.previous"));
    this.#next.setAttribute("aria-label", t("grid.next"));
    this.#label.textContent =
      this.#pages > 1
        ? t("grid.page", { page: String(this.#page + 1), pages: String(this.#pages), count: String(tiles.size) })
        : t("grid.count", { count: String(tiles.size) });
    this.#selfView.textContent = t(this.hideSelf ? "grid.show_self" : "grid.hide_self");
    this.#selfView.setAttribute("aria-pressed", String(this.hideSelf));
    this.#size();
    this.#onLayout();
  }

  /** Size the tiles so that the page fills the space it has at the tiles' aspect ratio. */
  #size() {
    const grid = this.#grid;
    const aspect = this.#aspect();
    const featured = grid.classList.contains("has-featured");
    const count = Math.max(1, this.#count - (featured ? 1 : 0));
    const width = grid.clientWidth;
    const top = grid.getBoundingClientRect().top;
    const reserved = (this.#pager.offsetHeight || 0) + (document.querySelector(".controls")?.clientHeight ?? 0) + 48;
    let height = Math.max(160, window.innerHeight - top - reserved);
    if (featured) height = Math.max(80, height * 0.25); // the strip under the featured tile
    let best = 0;
    let columns = 1;
    for (let c = 1; c <= count; c++) {
      const rows = Math.ceil(count / c);
      const w = Math.min((width - GAP * (c - 1)) / c, ((height - GAP * (rows - 1)) / rows) * aspect);
      if (w > best) {
        best = w;
        columns = c;
      }
    }
    grid.style.setProperty("--columns", String(columns));
    grid.style.setProperty("--tile-width", `${Math.max(80, Math.floor(best))}px`);
    grid.style.setProperty("--tile-aspect", String(aspect));
  }

  /**
   * The tiles' aspect: that of the videos on the page shown (the middle one, if they differ),
   * or the default one while none plays.
   * @returns {number} width over height
   */
  #aspect() {
    const ratios = [];
    for (const tile of this.#tiles.values()) {
      if (tile.hidden || tile.classList.contains("featured") || tile.classList.contains("no-video")) continue;
      const video = tile.querySelector("video");
      if (video && video.videoWidth > 0 && video.videoHeight > 0) ratios.push(video.videoWidth / video.videoHeight);
    }
    if (ratios.length === 0) return PHONE.matches ? ASPECT.phone : ASPECT.wide;
    ratios.sort((a, b) => a - b);
    const middle = ratios[Math.floor(ratios.length / 2)] ?? ASPECT.wide;
    return Math.min(ASPECT_RANGE.max, Math.max(ASPECT_RANGE.min, middle));
  }
}
