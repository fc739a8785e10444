/**
 * The scale scenario's public surface, for bench/main.ts: run it, render it.
 */
export { runScale, checkScaleOptions, DEFAULT_SCALE, methodNotes } from "./scale.js";
export { renderMarkdown, renderTable } from "./render.js";
export type { ScaleOptions, ScaleResult, ModeResult, ScaleMode } from "./types.js";
