// @ts-check
/**
 * How a reaction looks and is named. The protocol names reactions by their emoji, but many
 * systems (minimal Linux desktops above all) have no emoji font and would show empty boxes:
 * each reaction is drawn here as an inline SVG icon instead, and has a translated name for
 * screen readers and tooltips.
 */
import { t } from "./i18n.js";

/**
 * @typedef {[string, Record<string, string>]} Shape an SVG element: its tag and attributes
 * @typedef {{key: string, shapes: Shape[]}} Look the translation key of its name, its drawing
 */

const FACE = "#f5c542";
const EDGE = "#7a5a00";
const face = /** @type {Shape} */ (["circle", { cx: "12", cy: "12", r: "10", fill: FACE, stroke: EDGE, "stroke-width": "1" }]);

/** @type {Record<string, Look>} every reaction of REACTIONS (protocol.gen.js), 24 by 24 */
const LOOKS = {
  "👍": {
    key: "reaction.thumbs_up",
    shapes: [
      ["rect", { x: "2", y: "10", width: "4.5", height: "11", rx: "1", fill: "#5b8def" }],
      ["path", { d: "M8 10.5 11.6 3a2.4 2.4 0 0 1 2.9 2.6L14 9.5h5.6a2.2 2.2 0 0 1 2.2 2.6l-1.5 7.4a2 2 0 0 1-2 1.5H8z", fill: FACE, stroke: EDGE, "stroke-width": "1" }],
    ],
  },
  "👏": {
    key: "reaction.clap",
    shapes: [
      ["rect", { x: "5", y: "8", width: "6", height: "13", rx: "3", fill: FACE, stroke: EDGE, "stroke-width": "1", transform: "rotate(-18 8 14.5)" }],
      ["rect", { x: "11", y: "8", width: "6", height: "13", rx: "3", fill: FACE, stroke: EDGE, "stroke-width": "1", transform: "rotate(18 14 14.5)" }],
      ["path", { d: "M12 2v3M7 3.5 8.5 6M17 3.5 15.5 6", stroke: "#8cc8f0", "stroke-width": "1.6", "stroke-linecap": "round", fill: "none" }],
    ],
  },
  "❤️": {
    key: "reaction.heart",
    shapes: [["path", { d: "M12 21s-9-5.6-9-11.6A4.9 4.9 0 0 1 12 6.6a4.9 4.9 0 0 1 9 2.8C21 15.4 12 21 12 21z", fill: "#e5484d", stroke: "#8a1c20", "stroke-width": "1" }]],
  },
  "😂": {
    key: "reaction.laugh",
    shapes: [
      face,
      ["path", { d: "M7 9.5q1.5-1.6 3 0M14 9.5q1.5-1.6 3 0", stroke: EDGE, "stroke-width": "1.4", fill: "none", "stroke-linecap": "round" }],
      ["path", { d: "M7 13h10a5 5 0 0 1-10 0z", fill: "#7a2e12" }],
      ["path", { d: "M4.5 11.5q-1.8 2.5 0 3.4 1.8-.9 0-3.4zM19.5 11.5q-1.8 2.5 0 3.4 1.8-.9 0-3.4z", fill: "#5bb6f0" }],
    ],
  },
  "😮": {
    key: "reaction.surprise",
    shapes: [
      face,
      ["circle", { cx: "8.5", cy: "9.5", r: "1.4", fill: EDGE }],
      ["circle", { cx: "15.5", cy: "9.5", r: "1.4", fill: EDGE }],
      ["ellipse", { cx: "12", cy: "16", rx: "2.3", ry: "2.8", fill: "#7a2e12" }],
    ],
  },
  "🎉": {
    key: "reaction.party",
    shapes: [
      ["path", { d: "M3 21 8 7l9 9z", fill: "#f5a623", stroke: "#8a5200", "stroke-width": "1" }],
      ["path", { d: "M14 3v3M19 5l-2 2M21 10h-3", stroke: "#e5484d", "stroke-width": "1.6", "stroke-linecap": "round" }],
      ["circle", { cx: "12", cy: "5", r: "1", fill: "#5bb6f0" }],
      ["circle", { cx: "20", cy: "14", r: "1", fill: "#7ed27e" }],
      ["circle", { cx: "17", cy: "2.5", r: ".9", fill: "#c58af9" }],
    ],
  },
};

/**
 * The translated name of a reaction ("Applause"), or the emoji itself if unknown.
 * @param {string} emoji
 * @returns {string}
 */
export function reactionName(emoji) {
  const look = LOOKS[emoji];
  return look ? t(look.key) : emoji;
}

/**
 * A reaction's icon, hidden from screen readers (whatever holds it carries the name).
 * @param {string} emoji one of REACTIONS
 * @returns {SVGSVGElement}
 */
export function reactionIcon(emoji) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "reaction-icon");
  svg.dataset.reaction = emoji;
  for (const [tag, attributes] of LOOKS[emoji]?.shapes ?? []) {
    const shape = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) shape.setAttribute(name, value);
    svg.append(shape);
  }
  return svg;
}
