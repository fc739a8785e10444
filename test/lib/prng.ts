/**
 * The fuzz tests' seeded PRNG: the benchmark's (bench/lib/prng.ts), one copy for both.
 */
export { mulberry32 } from "../../bench/lib/prng.js";
