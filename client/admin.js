// The researcher's live view: sessions every second, trajectories every 5 s. The token stays in this page.
"use strict";
(() => {
  const token = new URLSearchParams(location.search).get("token") || "";
  const headers = { Authorization: `Bearer ${token}` };
  const cell = (text) => { const td = document.createElement("td"); td.textContent = text ?? ""; return td; };

  async function get(path) {
    const r = await fetch(path, { headers });
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return r.json();
  }
  async function sessions() {
    const data = await get("/api/admin/sessions");
    const body = document.querySelector("#sessions tbody");
    body.replaceChildren(...data.sessions.map((s) => {
      const tr = document.createElement("tr");
      for (const v of [s.participant, s.game, s.traj_id, s.episode, s.connected ? s.state : "disconnected", s.frame,
        s.score, s.fps, s.rtt_ms == null ? "" : Math.round(s.rtt_ms),
        s.mic_level == null ? "" : s.mic_level.toFixed(3)]) tr.append(cell(v));
      return tr;
    }));
    document.getElementById("updated").textContent = `${data.sessions.length}/${data.max} sessions · ${new Date().toLocaleTimeString()}`;
  }
  async function trajectories() {
    const data = await get("/api/trajectories");
    const body = document.querySelector("#trajectories tbody");
    body.replaceChildren(...data.trajectories.map((t) => {
      const tr = document.createElement("tr");
      for (const v of [t.traj_id, t.participant, t.status, t.end_reason, t.score, t.duration_s, t.speech_s]) tr.append(cell(v));
      const files = document.createElement("td");
      for (const f of ["meta.json", "frames.csv", "events.csv", "speech.wav"]) {
        const a = document.createElement("a");
        a.textContent = f; a.href = `/api/trajectories/${t.traj_id}/${f}?token=${encodeURIComponent(token)}`;
        files.append(a, " ");
      }
      tr.append(files);
      return tr;
    }));
  }
  const safe = (fn) => () => fn().catch((e) => { document.getElementById("updated").textContent = String(e); });
  safe(sessions)(); safe(trajectories)();
  setInterval(safe(sessions), 1000);
  setInterval(safe(trajectories), 5000);
})();
