#!/usr/bin/env node
// Plays Cascade's player page in headless Chromium (Debian's package, driven by
// playwright-core) and prints what the viewer got as one JSON object on stdout.
//
//   node player/drive.mjs --url https://localhost:8443/player/<id>?protocol=dash \
//        --seconds 60 [--quic localhost:8443] [--spki <sha256 base64>] [--switch-after 10]
//        [--warmup 5] [--chromium /usr/bin/chromium] [--out report.json]
//
// --quic forces HTTP/3 to that origin; --spki trusts a self-signed certificate (over TCP and
// QUIC); --switch-after picks another rendition after that many seconds of playback and goes
// back to automatic once it is shown. Progress goes to stderr every 5 s. With DRIVE_REQUESTS=1
// in the environment, every request (ms since the page was asked, status, path without CMCD)
// and the page's console also go to stderr, to see what a player asked for and when.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function parseArgs(argv) {
  const args = { seconds: 30, warmup: 5, chromium: "/usr/bin/chromium", switchAfter: null };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    switch (name) {
      case "--url": args.url = value; break;
      case "--seconds": args.seconds = Number(value); break;
      case "--warmup": args.warmup = Number(value); break;
      case "--quic": args.quic = value; break;
      case "--spki": args.spki = value; break;
      case "--switch-after": args.switchAfter = Number(value); break;
      case "--chromium": args.chromium = value; break;
      case "--out": args.out = value; break;
      default: throw new Error(`unknown argument ${name}`);
    }
  }
  if (!args.url) throw new Error("--url is required");
  if (!(args.seconds > 0)) throw new Error("--seconds must be a positive number");
  return args;
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

const args = parseArgs(process.argv.slice(2));
const profile = mkdtempSync(join(tmpdir(), "cascade-chromium-"));
const flags = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  // localhost may resolve to ::1 first; the stack listens on 127.0.0.1.
  "--host-resolver-rules=MAP localhost 127.0.0.1",
];
if (args.spki) flags.push(`--ignore-certificate-errors-spki-list=${args.spki}`);
if (args.quic) flags.push("--enable-quic", `--origin-to-force-quic-on=${args.quic}`);

let browser;
let exitCode = 0;
try {
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    args: flags,
    ignoreHTTPSErrors: Boolean(args.spki),
  });
  const page = browser.pages()[0] || (await browser.newPage());
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text().slice(0, 300));
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e).slice(0, 300)));
  if (process.env.DRIVE_REQUESTS) {
    const t0 = Date.now();
    page.on("requestfinished", async (r) => {
      const resp = await r.response();
      console.error(`${Date.now() - t0} ${resp ? resp.status() : "-"} ${r.url().replace(/^https?:\/\/[^/]+/, "").replace(/[?&]CMCD=[^&]*/, "")}`);
    });
    page.on("request", (r) => console.error(`${Date.now() - t0} START ${r.url().replace(/^https?:\/\/[^/]+/, "").replace(/[?&]CMCD=[^&]*/, "")}`));
    page.on("requestfailed", (r) => console.error(`${Date.now() - t0} FAIL ${r.url()} ${r.failure() && r.failure().errorText}`));
    page.on("console", (m) => console.error(`console ${m.type()} ${m.text().slice(0, 200)}`));
  }
  const asked = Date.now();
  const response = await page.goto(args.url, { waitUntil: "domcontentloaded", timeout: 15000 });
  const pageStatus = response ? response.status() : null;

  const started = Date.now();
  let switched = null;
  let switchAsked = null;
  let lastProgress = 0;
  while (Date.now() - started < args.seconds * 1000) {
    await page.waitForTimeout(250);
    const s = await page.evaluate(() => window.cascadeStats || null);
    if (!s) continue;
    if (args.switchAfter !== null && s.playedSeconds >= args.switchAfter && switchAsked === null) {
      const current = s.renditions.findIndex((r) => r.height === s.height);
      const target = s.renditions.findIndex((_, i) => i !== current);
      if (target >= 0) {
        switchAsked = { from: s.height, to: s.renditions[target].height };
        await page.evaluate((i) => window.cascadePlayer.setQuality(i), target);
      }
    }
    if (switchAsked && switched === null && s.height === switchAsked.to) {
      switched = true;
      await page.evaluate(() => window.cascadePlayer.setQuality(-1));
    }
    if (Date.now() - lastProgress > 5000) {
      lastProgress = Date.now();
      process.stderr.write(
        `[drive] ${Math.round((Date.now() - started) / 1000)} s: ${s.state}, latency ${s.latency === null ? "-" : s.latency.toFixed(2)} s, ` +
          `buffer ${s.buffer.toFixed(2)} s, ${s.height || "-"}p, stalls ${s.stalls}, errors ${s.errors.length}\n`
      );
    }
  }
  const stats = await page.evaluate(() => window.cascadeStats || null);
  const protocols = await page.evaluate(() => {
    const seen = {};
    for (const e of performance.getEntriesByType("resource")) {
      if (/\.(m4s|mp4|m3u8|mpd)(\?|$)/.test(e.name)) {
        const p = e.nextHopProtocol || "unknown";
        seen[p] = (seen[p] || 0) + 1;
      }
    }
    return seen;
  });
  const firstFrameMs = stats && stats.firstFrameMs;
  // Latency after the warm-up: the player's start-up catch-up is not the steady state.
  const steady = stats ? stats.latencies.slice(Math.round(args.warmup * 4)) : [];
  const sorted = [...steady].sort((a, b) => a - b);
  const result = {
    url: args.url,
    pageStatus,
    started: Boolean(stats && stats.firstFrameMs !== null),
    state: stats ? stats.state : "no player",
    firstFrameMs,
    playedSeconds: stats ? Number(stats.playedSeconds.toFixed(2)) : 0,
    stalls: stats ? stats.stalls : null,
    stallSeconds: stats ? Number((stats.stallMs / 1000).toFixed(2)) : null,
    stallLog: stats ? stats.stallLog : [],
    errors: stats ? stats.errors : [],
    warnings: stats ? stats.warnings : [],
    trace: stats ? stats.trace : [],
    currentTime: await page.evaluate(() => {
      const video = document.getElementById("video");
      return video ? video.currentTime : null;
    }),
    buffered: stats ? stats.buffered : "",
    consoleErrors,
    latency: {
      samples: sorted.length,
      median: quantile(sorted, 0.5),
      p95: quantile(sorted, 0.95),
      max: sorted.length ? sorted[sorted.length - 1] : null,
    },
    heightsSeen: stats ? stats.heightsSeen : [],
    renditions: stats ? stats.renditions : [],
    switchAsked,
    switched: switchAsked ? Boolean(switched) : null,
    protocols,
    wallMs: Date.now() - asked,
  };
  const report = JSON.stringify(result) + "\n";
  if (args.out) writeFileSync(args.out, report);
  process.stdout.write(report);
} catch (e) {
  process.stderr.write(`[drive] ${e.stack || e}\n`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(exitCode);
