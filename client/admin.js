// The study monitor: the funnel and the participants every 2 s, the trajectories every 10 s (/api/monitor,
// /api/trajectories). Signed in by the session cookie: no token in this page, its requests or its links.
"use strict";
(() => {
  const FUNNEL = [
    ["entered", "entered"], ["consented", "consented"], ["miccheck", "microphone check"], ["practice", "practice"],
    ["playing", "playing"], ["completed", "completed"], ["declined", "declined"], ["screened_out", "screened out"],
    ["dropped", "dropped"],
  ];
  const OUT = new Set(["declined", "screened_out", "dropped"]);
  const STAGE_NAMES = {
    consent: "consent", instructions: "instructions", miccheck: "microphone check", practice: "practice",
    episodes: "playing", free: "playing", done: "completed", declined: "declined", screened_out: "screened out",
  };
  const speechBy = new Map(); // participant -> seconds of voice activity over their closed trajectories
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const dur = (s) => {
    if (s == null) return "";
    s = Math.max(0, Math.round(s));
    return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${(s / 3600).toFixed(1)} h`;
  };
  const ago = (t) => (t ? `${dur(Date.now() / 1000 - t)} ago` : "");

  async function get(path) {
    const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { location.assign("/signin?next=/admin"); throw new Error("signed out"); }
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return r.json();
  }

  function funnel(data) {
    const ul = document.getElementById("funnel");
    ul.replaceChildren(...FUNNEL.map(([key, label]) => {
      const li = el("li", null, OUT.has(key) ? "out" : "");
      li.dataset.step = key;
      li.append(el("span", data.funnel[key] ?? 0, "n"), el("span", label, "label"));
      const now = data.now[key];
      if (now && !OUT.has(key) && key !== "completed") li.append(el("div", `${now} here now`, "now"));
      return li;
    }));
  }

  async function monitor() {
    const data = await get("/api/monitor");
    funnel(data);
    document.getElementById("stuck-hint").textContent =
      `highlighted: in one stage longer than ${dur(data.stuck_after_s)}`;
    document.getElementById("processes").textContent = `${data.processes.length} server process(es)`;
    const body = document.querySelector("#participants tbody");
    body.replaceChildren(...data.participants.map((p) => {
      const tr = el("tr", null, p.stuck ? "stuck" : "");
      tr.dataset.participant = p.participant;
      tr.dataset.status = p.status;
      const stage = p.status === "dropped" ? `dropped (at ${STAGE_NAMES[p.stage] || p.stage})`
        : (STAGE_NAMES[p.stage] || p.stage || "");
      // closed trajectories (not practice), plus the episode being played now
      const live = p.in_episode && !p.practice && p.voiced_s != null ? p.voiced_s : null;
      const closed = speechBy.get(p.participant);
      const speech = closed == null && live == null ? null : (closed || 0) + (live || 0);
      const cells = [
        [p.participant], [stage + (p.in_episode && p.stage !== "episodes" && p.stage !== "free" ? ", playing" : ""), "stage"],
        [dur(p.time_in_stage_s)], [p.connected ? "connected" : ago(p.last_seen)], [p.episodes ?? 0],
        [speech == null ? "" : speech.toFixed(1)], [p.rtt_ms == null ? "" : Math.round(p.rtt_ms)],
        [p.ack_lag_ms == null ? "" : Math.round(p.ack_lag_ms)], [p.fps == null ? "" : p.fps.toFixed(1)],
        [p.game || ""], [p.outcome || p.code || ""], [p.process || ""],
      ];
      for (const [text, cls] of cells) tr.append(el("td", text, cls));
      return tr;
    }));
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function trajectories() {
    const data = await get("/api/trajectories");
    speechBy.clear();
    for (const t of data.trajectories) {
      if (!t.practice) speechBy.set(t.participant, (speechBy.get(t.participant) || 0) + (t.speech_s || 0));
    }
    const body = document.querySelector("#trajectories tbody");
    body.replaceChildren(...data.trajectories.slice().reverse().map((t) => {
      const tr = el("tr");
      tr.dataset.traj = t.traj_id;
      for (const v of [t.traj_id, t.participant, t.status, t.end_reason, t.score, t.duration_s]) {
        tr.append(el("td", v));
      }
      const voice = el("td", t.speech_s == null ? "" : t.speech_s.toFixed(1), "speech");
      voice.title = `${t.audio_s ?? 0} s of audio`;
      tr.append(voice);
      const up = t.upload || {};
      const upload = el("td", up.state + (up.error ? `: ${up.error}` : ""), `upload-${up.state}`);
      if (up.attempts) upload.title = `${up.attempts} attempts`;
      tr.append(upload);
      const replay = el("td");
      if (t.status !== "recording") {
        const a = el("a", "replay");
        a.href = `/replay/${encodeURIComponent(t.traj_id)}`;
        replay.append(a);
      }
      tr.append(replay);
      const files = el("td");
      const zip = el("a", "zip");
      zip.href = `/api/trajectories/${encodeURIComponent(t.traj_id)}.zip`;
      files.append(zip);
      for (const f of ["meta.json", "frames.csv", "events.csv", "speech.wav", "speech_sync.csv", "game_audio.wav"]) {
        const a = el("a", f);
        a.href = `/api/trajectories/${encodeURIComponent(t.traj_id)}/${f}`;
        files.append(" ", a);
      }
      tr.append(files);
      return tr;
    }));
  }

  const safe = (fn) => () => fn().catch((e) => { document.getElementById("updated").textContent = String(e); });
  safe(trajectories)().then(safe(monitor));
  setInterval(safe(monitor), 2000);
  setInterval(safe(trajectories), 10000);
})();
