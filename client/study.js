// The study's pages around the game: entry checks, consent, instructions and the outcome handed back to the recruiting
// platform (completed, declined, screened out, technical failure). app.js calls Study.render for every study_state
// outside the game; the events are in docs/protocol.md.
"use strict";
window.Study = (() => {
  const $ = (id) => document.getElementById(id);
  const REDIRECT_S = 5;
  let entry = { running: false, result: null }, redirectTimer = null;

  // "20 seconds", "1 minute", "10 minutes", "2 minutes 30 seconds"
  function duration(s) {
    s = Math.max(0, Math.round(s));
    const plural = (n, unit) => `${n} ${unit}${n === 1 ? "" : "s"}`;
    if (s < 60) return plural(s, "second");
    const m = Math.floor(s / 60), r = s % 60;
    return r ? `${plural(m, "minute")} ${plural(r, "second")}` : plural(m, "minute");
  }

  // Where the participant came from, from the page URL: Prolific's or MTurk's study and session IDs.
  function recruitment(params) {
    if (params.get("PROLIFIC_PID"))
      return { platform: "prolific", study_id: params.get("STUDY_ID"), session_id: params.get("SESSION_ID") };
    if (params.get("workerId"))
      return { platform: "mturk", study_id: params.get("hitId"), session_id: params.get("assignmentId") };
    return null;
  }

  // --- entry checks ----------------------------------------------------------------------------------------------
  // Measured once per tab (kept across reloads); sent with every `start` so each meta.json has them.
  function measured() {
    try { return JSON.parse(sessionStorage.getItem("atari-checks")); } catch (e) { return null; }
  }

  async function runChecks(ui, giveUp) {
    if (entry.running) return;
    entry.running = true;
    ui.showSection("entry");
    $("entry-title").textContent = "Checking your computer…";
    $("entry-intro").textContent = "This takes a few seconds.";
    $("entry-reasons").replaceChildren();
    $("entry-actions").hidden = true;
    try {
      const r = await EntryChecks.run(ui.socket);
      entry.result = r;
      sessionStorage.setItem("atari-checks", JSON.stringify(r.measured));
      ui.socket.emit("entry_checks", { measured: r.measured, reasons: r.reasons, give_up: !!giveUp });
    } finally {
      entry.running = false;
    }
  }

  function showFailedChecks(ui, st) {
    const r = entry.result || { measured: measured() || {} };
    ui.showSection("entry");
    $("entry-title").textContent = "Before you can start";
    $("entry-intro").textContent = "Please change the following, then press Check again.";
    const list = $("entry-reasons");
    list.replaceChildren();
    for (const reason of st.entry.reasons) {
      const e = EntryChecks.explain(reason, st.checks, r.measured);
      const li = document.createElement("li");
      li.dataset.reason = reason;
      li.append(e.text);
      if (e.link) {
        const a = document.createElement("a");
        a.href = e.link; a.textContent = e.link;
        li.append(" ", a);
      }
      list.append(li);
    }
    $("entry-actions").hidden = false;
    $("entry-giveup").hidden = st.stage === "free"; // free play has no outcome to hand back
  }

  // --- outcomes ----------------------------------------------------------------------------------------------------
  const REASON_TEXT = {
    insecure: "a secure (https://) connection", browser: "a current browser on a computer", window: "a larger window",
    refresh: "a faster display", rtt: "a faster connection",
  };

  function showOutcome(ui, st) {
    const o = st.outcome || { kind: st.stage };
    const prolific = ui.recruitment && ui.recruitment.platform === "prolific";
    let title, text;
    switch (o.kind) {
      case "completed":
        title = st.already ? "You have already completed this study" : "Thank you!";
        text = st.already ? "Your participation is complete; nothing more will be recorded." : "You have finished the study.";
        break;
      case "declined":
        title = "Thank you";
        text = "You chose not to take part. Nothing was recorded." +
          (prolific ? " Please return the study on Prolific (press \"Return\" on the study's page) so that your place goes to someone else." : " You may close this page.");
        break;
      case "screened":
        title = "Sorry, you cannot take part with this computer";
        text = `The study needs ${(st.reasons || []).map((r) => REASON_TEXT[r] || r).join(", ")}. Nothing was recorded.` +
          (prolific && !o.code ? " Please return the study on Prolific." : "");
        break;
      default:
        title = "Sorry, something went wrong";
        text = st.reason === "microphone" ? "Your microphone stopped working, so the study cannot go on. What you played so far is kept." :
          "The server could not record your session, so the study cannot go on.";
    }
    $("outcome").dataset.kind = o.kind;
    $("outcome-title").textContent = title;
    $("outcome-text").textContent = text;
    $("outcome-code-row").hidden = !o.code;
    $("code").textContent = o.code || "";
    const go = $("outcome-go");
    go.hidden = !o.url;
    $("outcome-copy").hidden = !o.code || !!o.url;
    clearInterval(redirectTimer);
    $("outcome-redirect").textContent = "";
    if (o.url) {
      go.href = o.url;
      go.textContent = prolific ? "Back to Prolific" : "Continue";
      let left = REDIRECT_S;
      const tick = () => {
        if (left <= 0) { clearInterval(redirectTimer); location.assign(o.url); return; }
        $("outcome-redirect").textContent = `Taking you back in ${left} s…`;
        left--;
      };
      tick();
      redirectTimer = setInterval(tick, 1000);
    }
    ui.showSection("outcome");
  }

  // --- pages ----------------------------------------------------------------------------------------------------------
  function showInstructions(ui, st) {
    $("instr-title").textContent = `How to play ${st.game.title}`;
    $("instr-goal").textContent = st.game.goal || "Score as many points as you can.";
    $("instr-keys").textContent = st.game.keys;
    $("instr-speech").textContent = st.speech_instruction;
    const p = st.progress;
    const play = p.episodes_total ? `${p.episodes_total} recorded game${p.episodes_total === 1 ? "" : "s"}` :
      `${duration(p.play_s_total)} of recorded play`;
    $("instr-plan").textContent = st.practice_s > 0 ?
      `First a practice round of ${duration(st.practice_s)} (not recorded), then ${play}.` : `You will have ${play}.`;
    ui.showSection("instructions");
  }

  // Renders a study_state outside the game; false when app.js shows the game (practice, episodes, free play).
  function render(ui, st) {
    document.body.classList.toggle("study", st.stage !== "free");
    if (st.stage in { done: 1, declined: 1, screened: 1, failed: 1 }) { showOutcome(ui, st); return true; }
    if (st.stage === "consent" || (st.stage === "free" && !ui.checked())) {
      if (st.entry && !st.entry.ok) { showFailedChecks(ui, st); return true; }
      if (!st.entry) { runChecks(ui); return true; }
      if (st.stage === "free") { ui.setChecked(); return false; }
      $("consent-text").innerHTML = st.consent_html || ""; // rendered by the server from Markdown, without raw HTML
      ui.showSection("consent");
      return true;
    }
    if (st.stage === "instructions") { showInstructions(ui, st); return true; }
    if (st.stage === "miccheck") { ui.showSection("miccheck"); return true; }
    return false;
  }

  function init(ui) {
    $("entry-again").addEventListener("click", () => runChecks(ui));
    $("entry-giveup").addEventListener("click", () => {
      const r = entry.result;
      if (r) ui.socket.emit("entry_checks", { measured: r.measured, reasons: r.reasons, give_up: true });
    });
    // A window made larger checks again by itself.
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      if ($("entry").hidden || entry.running || !$("entry-reasons").querySelector('[data-reason="window"]')) return;
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => runChecks(ui), 500);
    });
    $("consent-accept").addEventListener("click", () => ui.socket.emit("consent", { accept: true }));
    $("consent-decline").addEventListener("click", () => ui.socket.emit("consent", { accept: false }));
    $("instr-done").addEventListener("click", () => ui.socket.emit("instructions_done"));
    $("give-up").addEventListener("click", () => ui.socket.emit("failure", { reason: "microphone" }));
  }

  return { render, init, duration, recruitment, measured };
})();
