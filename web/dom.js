// @ts-check
/** Typed access to the page's elements, so that `// @ts-check` covers the code using them. */

/**
 * The element with this id, checked to be of `type`. A missing or different element is a
 * mistake in the page, not a condition to handle: it throws at once rather than later.
 * @template {Element} T
 * @param {string} id
 * @param {new (...args: any[]) => T} type e.g. `HTMLButtonElement`
 * @returns {T}
 */
export function byId(id, type) {
  const element = document.getElementById(id);
  if (!(element instanceof type)) throw new TypeError(`#${id} is not a ${type.name}`);
  return element;
}

/**
 * The first descendant of `root` matching `selector`, checked to be of `type` (as {@link byId}).
 * @template {Element} T
 * @param {ParentNode} root
 * @param {string} selector
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
export function find(root, selector, type) {
  const element = root.querySelector(selector);
  if (!(element instanceof type)) throw new TypeError(`${selector} is not a ${type.name}`);
  return element;
}
