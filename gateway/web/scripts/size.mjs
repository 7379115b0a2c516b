// Prints the gzipped size of the built JavaScript (and CSS) and fails when the JS passes the budget.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET_KIB = 150;
const dir = new URL("../dist/assets/", import.meta.url).pathname;
let js = 0;
let css = 0;
const rows = [];
for (const name of readdirSync(dir).sort()) {
  if (!/\.(m?js|css)$/.test(name)) continue;
  const raw = readFileSync(join(dir, name));
  const gz = gzipSync(raw, { level: 9 }).length;
  if (name.endsWith(".css")) css += gz;
  else js += gz;
  rows.push(`  ${name.padEnd(32)} ${(raw.length / 1024).toFixed(1).padStart(7)} KiB  gzip ${(gz / 1024).toFixed(1).padStart(6)} KiB`);
}
console.log(rows.join("\n"));
const kib = js / 1024;
console.log(`JavaScript: ${kib.toFixed(1)} KiB gzipped (budget ${BUDGET_KIB} KiB); CSS: ${(css / 1024).toFixed(1)} KiB gzipped`);
if (kib > BUDGET_KIB) {
  console.error(`The JavaScript is over the ${BUDGET_KIB} KiB gzipped budget.`);
  process.exit(1);
}
