// Builds static/consent.min.js and static/consent-more.min.js from their sources with terser:
// `npm run build`. The first line of each records a hash of its source; the gateway uses a build
// only while it matches.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { minify } from "terser";

for (const name of ["consent", "consent-more"]) {
  const source = readFileSync(new URL(name + ".js", import.meta.url));
  const hash = createHash("sha256").update(source).digest("hex").slice(0, 16);
  const out = await minify(source.toString("utf8"), {
    ecma: 2017,
    compress: { passes: 2 },
    mangle: true,
    format: { comments: false, preamble: "/*! " + name + ".js " + hash + " */" },
  });
  writeFileSync(new URL(name + ".min.js", import.meta.url), out.code + "\n");
  console.log("static/" + name + ".min.js: " + out.code.length + " bytes from source " + hash);
}
