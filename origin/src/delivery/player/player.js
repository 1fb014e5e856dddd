// Cascade's player page: plays one live stream or recording with hls.js or dash.js and shows
// what a viewer (and the player tests) want to know: live latency, buffer, rendition, bitrate,
// stalls and errors. Every figure is also published as `window.cascadeStats`.
(function () {
  "use strict";

  const page = document.getElementById("player");
  const kind = page.dataset.kind; // "live" or "vod"
  const id = page.dataset.id;
  const params = new URLSearchParams(location.search);
  const protocol = params.get("protocol") === "dash" ? "dash" : "hls";
  // Everything is fetched relative to the page, so a signed-URL prefix (/t/<token>/) and the
  // host the page came from (an edge, over whichever protocol) carry over to the media.
  const base = new URL(kind === "vod" ? "../../" : "../", location.href);
  const manifest = new URL(
    `${kind}/${id}/${protocol === "dash" ? "manifest.mpd" : "master.m3u8"}`,
    base
  ).href;
  const video = document.getElementById("video");
  const sessionId = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);

  const stats = {
    protocol,
    kind,
    id,
    manifest,
    state: "loading",
    firstFrameMs: null,
    stalls: 0,
    stallMs: 0,
    // Each stall: media time, how long, and the media buffered ahead of the play head when it
    // began (0 when the player ran out of data; more when the decoder fell behind).
    stallLog: [],
    errors: [],
    warnings: [],
    trace: [],
    buffered: "",
    latency: null,
    latencies: [],
    buffer: 0,
    height: null,
    bitrate: null,
    heightsSeen: [],
    renditions: [],
    playedSeconds: 0,
  };
  window.cascadeStats = stats;

  let stalledSince = null;
  let everPlayed = false;

  function warn(message) {
    stats.warnings.push({ at: Date.now(), t: Number(video.currentTime.toFixed(2)), message: String(message) });
    if (stats.warnings.length > 30) stats.warnings.shift();
  }

  // Media buffered from the play head on, within the range that holds it.
  function bufferedAhead() {
    const t = video.currentTime;
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= t + 0.05 && t < video.buffered.end(i)) return video.buffered.end(i) - t;
    }
    return 0;
  }

  // The last media appended, for diagnosing a stall.
  function trace(message) {
    stats.trace.push(`${video.currentTime.toFixed(2)} ${message}`);
    if (stats.trace.length > 60) stats.trace.shift();
  }

  function note(message) {
    stats.errors.push({ at: Date.now(), message: String(message) });
    render();
  }

  video.addEventListener("playing", () => {
    if (!everPlayed) {
      everPlayed = true;
      stats.firstFrameMs = Math.round(performance.now());
    }
    if (stalledSince !== null) {
      const ms = performance.now() - stalledSince;
      stats.stallMs += ms;
      stats.stallLog[stats.stallLog.length - 1].ms = Math.round(ms);
      stalledSince = null;
    }
    stats.state = "playing";
    render();
  });
  video.addEventListener("waiting", () => {
    // A stall is the play head waiting for data after playback began, not a seek.
    if (everPlayed && !video.seeking && stalledSince === null) {
      stats.stalls += 1;
      stalledSince = performance.now();
      stats.stallLog.push({ at: Number(video.currentTime.toFixed(2)), ms: null, ahead: Number(bufferedAhead().toFixed(2)) });
      if (stats.stallLog.length > 30) stats.stallLog.shift();
      stats.state = "stalled";
      render();
    }
  });
  video.addEventListener("ended", () => {
    stats.state = "ended";
    render();
  });
  video.addEventListener("error", () => {
    const e = video.error;
    note(`video element: ${e ? e.code + " " + e.message : "unknown error"}`);
  });

  // Only the chosen player is loaded: the page asks for one script, not both.
  const assets = document.currentScript.dataset.assets;
  let controller = null;
  const vendor = document.createElement("script");
  vendor.src = assets + (protocol === "dash" ? "dash.all.min.js" : "hls.min.js");
  vendor.onload = () => {
    controller = protocol === "dash" ? startDash() : startHls();
    window.cascadePlayer = controller;
  };
  vendor.onerror = () => note(`cannot load the ${protocol} player (${vendor.src})`);
  document.head.appendChild(vendor);

  function startHls() {
    if (!window.Hls || !Hls.isSupported()) {
      note("hls.js is not available in this browser");
      return null;
    }
    const hls = new Hls({
      lowLatencyMode: true,
      // CMAF needs no transmuxing, and the worker re-compiles all of hls.js before the
      // first part can be appended: on the main thread the first frame comes sooner.
      enableWorker: false,
      // Catch up (up to 1.2x) when behind the target latency, e.g. after joining from a
      // playlist a moment old or after a stall; hls.js's default never speeds up.
      maxLiveSyncPlaybackRate: 1.2,
      backBufferLength: 30,
      cmcd: { sessionId, contentId: id, useHeaders: false },
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) {
        note(`hls.js ${data.type}: ${data.details}`);
        stats.state = "error";
      } else {
        warn(`hls.js ${data.type}: ${data.details}`);
      }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      stats.renditions = hls.levels.map((l) => ({ height: l.height, bitrate: l.bitrate }));
      fillQualityMenu(stats.renditions);
    });
    hls.on(Hls.Events.FRAG_BUFFERED, (_event, data) => {
      const f = data.frag;
      const p = data.part;
      trace(`${f.type} L${f.level} sn ${f.sn}${p ? "." + p.index : ""} ${(p || f).start.toFixed(2)}+${(p || f).duration.toFixed(2)}${p && p.independent ? " I" : ""}`);
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => {
      const level = hls.levels[data.level];
      if (level) rendition(level.height, level.bitrate);
    });
    hls.loadSource(manifest);
    hls.attachMedia(video);
    return {
      latency() {
        const date = hls.playingDate;
        return date ? (Date.now() - date.getTime()) / 1000 : null;
      },
      current() {
        const level = hls.levels[hls.currentLevel];
        return level ? { height: level.height, bitrate: level.bitrate } : null;
      },
      setQuality(index) {
        // From the next load on, keeping what is buffered (-1: automatic). An immediate
        // switch (`currentLevel`) flushes the buffer and can append a part that does not
        // start on a keyframe, which stalls the picture.
        hls.loadLevel = index;
      },
    };
  }

  function startDash() {
    if (!window.dashjs) {
      note("dash.js is not available in this browser");
      return null;
    }
    const player = dashjs.MediaPlayer().create();
    player.updateSettings({
      streaming: {
        cmcd: { enabled: true, sid: sessionId, cid: id, mode: "query" },
      },
    });
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      const err = e.error || {};
      note(`dash.js: ${err.code || ""} ${err.message || JSON.stringify(err)}`);
      stats.state = "error";
    });
    player.on(dashjs.MediaPlayer.events.BUFFER_EMPTY, (e) => warn(`dash.js: ${e.mediaType} buffer empty`));
    player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {
      stats.renditions = player
        .getRepresentationsByType("video")
        .map((r) => ({ height: r.height, bitrate: r.bandwidth }));
      fillQualityMenu(stats.renditions);
    });
    player.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== "video") return;
      const r = player.getCurrentRepresentationForType("video");
      if (r) rendition(r.height, r.bandwidth);
    });
    player.initialize(video, manifest, true);
    return {
      latency() {
        if (kind !== "live") return null;
        const l = player.getCurrentLiveLatency();
        return Number.isFinite(l) && l > 0 ? l : null;
      },
      current() {
        const r = player.getCurrentRepresentationForType("video");
        return r ? { height: r.height, bitrate: r.bandwidth } : null;
      },
      setQuality(index) {
        const auto = index < 0;
        player.updateSettings({
          streaming: { abr: { autoSwitchBitrate: { video: auto } } },
        });
        if (!auto) player.setRepresentationForTypeByIndex("video", index);
      },
    };
  }

  function rendition(height, bitrate) {
    stats.height = height;
    stats.bitrate = bitrate;
    if (!stats.heightsSeen.includes(height)) stats.heightsSeen.push(height);
    render();
  }

  function fillQualityMenu(renditions) {
    const menu = document.getElementById("quality");
    menu.replaceChildren(new Option("auto", "-1"));
    renditions.forEach((r, i) => menu.add(new Option(`${r.height}p`, String(i))));
  }
  document.getElementById("quality").addEventListener("change", (e) => {
    if (controller) controller.setQuality(Number(e.target.value));
  });
  for (const link of document.querySelectorAll("[data-protocol]")) {
    const other = new URL(location.href);
    other.searchParams.set("protocol", link.dataset.protocol);
    link.href = other.href;
    if (link.dataset.protocol === protocol) link.classList.add("current");
  }

  let lastTime = null;
  let lastTick = performance.now();
  setInterval(() => {
    const now = performance.now();
    const elapsed = (now - lastTick) / 1000;
    lastTick = now;
    if (video.buffered.length > 0) {
      stats.buffer = Math.max(0, video.buffered.end(video.buffered.length - 1) - video.currentTime);
    }
    const ranges = [];
    for (let i = 0; i < video.buffered.length; i++) {
      ranges.push(`${video.buffered.start(i).toFixed(2)}-${video.buffered.end(i).toFixed(2)}`);
    }
    stats.buffered = ranges.join(" ");
    // Wall-clock time with the picture moving: seeks and catch-up speed-ups do not count.
    const moved = lastTime !== null && video.currentTime !== lastTime;
    if (!video.paused && moved && stats.state === "playing") stats.playedSeconds += elapsed;
    lastTime = video.currentTime;
    const shown = controller && controller.current();
    if (shown && shown.height && shown.height !== stats.height) rendition(shown.height, shown.bitrate);
    const latency = controller && stats.state === "playing" ? controller.latency() : null;
    if (latency !== null) {
      stats.latency = latency;
      stats.latencies.push(latency);
      if (stats.latencies.length > 3600) stats.latencies.shift();
    }
    render();
  }, 250);

  function render() {
    const fmt = (v, unit, digits = 2) => (v === null || v === undefined ? "–" : v.toFixed(digits) + unit);
    const rows = {
      state: stats.state,
      protocol: protocol.toUpperCase(),
      latency: kind === "live" ? fmt(stats.latency, " s") : "VOD",
      buffer: fmt(stats.buffer, " s"),
      rendition: stats.height ? `${stats.height}p` : "–",
      bitrate: stats.bitrate ? `${(stats.bitrate / 1e6).toFixed(2)} Mbit/s` : "–",
      stalls: `${stats.stalls} (${(stats.stallMs / 1000).toFixed(1)} s)`,
      "first frame": stats.firstFrameMs === null ? "–" : `${stats.firstFrameMs} ms`,
      errors: stats.errors.length ? stats.errors[stats.errors.length - 1].message : "none",
    };
    for (const [name, value] of Object.entries(rows)) {
      const cell = document.querySelector(`[data-stat="${name}"]`);
      if (cell && cell.textContent !== value) cell.textContent = value;
    }
  }
  render();
})();
