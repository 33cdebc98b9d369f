// Builds static/consent.min.js from static/consent.js with terser: `npm run build`.
// The first line records a hash of the source; the gateway uses the build only while it matches.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { minify } from "terser";

const source = readFileSync(new URL("consent.js", import.meta.url));
const hash = createHash("sha256").update(source).digest("hex").slice(0, 16);
const out = await minify(source.toString("utf8"), {
  ecma: 2017,
  compress: { passes: 2 },
  mangle: true,
  format: { comments: false, preamble: "/*! consent.js " + hash + " */" },
});
writeFileSync(new URL("consent.min.js", import.meta.url), out.code + "\n");
console.log("static/consent.min.js: " + out.code.length + " bytes from source " + hash);
