// dfdetect web page: upload images to /predict, show verdicts, Grad-CAM via /explain, history from /scans.
// Plain JavaScript, no build step, no external resources (works offline). Text from the server is always
// inserted with textContent, never as HTML.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const KEY_STORE = "dfdetect-api-key";
  const PAGE = 25;
  let historyOffset = 0;

  function apiKey() {
    try { return localStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = new Headers(opts.headers || {});
    const key = apiKey();
    if (key) headers.set("X-API-Key", key);
    const resp = await fetch(path, Object.assign({}, opts, { headers: headers }));
    let body = null;
    const ctype = resp.headers.get("content-type") || "";
    if (ctype.includes("application/json")) body = await resp.json();
    else body = { detail: await resp.text() };
    if (resp.status === 401 || resp.status === 403) showAuth(body && body.detail);
    if (!resp.ok) {
      const err = new Error(describe(body && body.detail) || resp.statusText);
      err.status = resp.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  function describe(detail) {
    if (!detail) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => d.error || d.msg || JSON.stringify(d)).join("; ");
    }
    return JSON.stringify(detail);
  }

  function showAuth(msg) {
    $("#auth").hidden = false;
    $("#auth-msg").textContent = msg || "";
  }

  function fmtScore(s) { return s === null || s === undefined ? "-" : s.toFixed(4); }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " kB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  // ---- model info -----------------------------------------------------------------------------
  async function loadHealth() {
    try {
      const h = await api("/health");
      const m = h.model;
      $("#model-info").textContent =
        "model " + m.id + " (" + m.arch + ", " + m.backend + " " + (m.precision || "fp32") + " on " + m.device +
        "), threshold " +
        m.threshold.toFixed(3) + " - dfdetect " + h.version;
    } catch (e) {
      $("#model-info").textContent = "server unreachable: " + e.message;
    }
  }

  // ---- scanning -------------------------------------------------------------------------------
  function makeCard(file) {
    const node = $("#card-template").content.firstElementChild.cloneNode(true);
    node.querySelector(".name").textContent = file.name;
    node.querySelector(".label").textContent = "scoring...";
    const url = URL.createObjectURL(file);
    const thumb = node.querySelector(".thumb");
    thumb.src = url;
    thumb.alt = file.name;
    thumb.addEventListener("error", () => { thumb.removeAttribute("src"); thumb.alt = ""; });
    node.querySelector(".explain").addEventListener("click", () => explain(node, file));
    node.querySelector(".explain").hidden = true;
    node.querySelector(".forensics-btn").addEventListener("click", () => forensics(node, file));
    node.querySelector(".forensics-btn").hidden = true;
    return node;
  }

  function fillCard(node, p) {
    node.classList.remove("fake", "real", "failed");
    if (p.error) {
      node.classList.add("failed");
      node.querySelector(".label").textContent = "not scored";
      node.querySelector(".error").textContent = p.error;
      node.querySelector(".bar").hidden = true;
      return;
    }
    node.classList.add(p.label);
    node.dataset.label = p.label;
    node.querySelector(".label").textContent = p.label.toUpperCase() + "  -  P(fake) " + fmtScore(p.score);
    const bar = node.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(p.score));
    bar.title = "P(fake) = " + fmtScore(p.score) + ", threshold " + p.threshold.toFixed(3);
    node.querySelector(".fill").style.width = (100 * p.score).toFixed(1) + "%";
    node.querySelector(".thr").style.left = (100 * p.threshold).toFixed(1) + "%";
    node.querySelector(".details").textContent =
      "threshold " + p.threshold.toFixed(3) + " - model " + p.model + " - sha256 " + p.sha256.slice(0, 12);
    node.querySelector(".explain").hidden = false;
    node.querySelector(".forensics-btn").hidden = false;
    // every mode: what makes this score less trustworthy (tiny, not square, re-compressed, noise, no face...)
    const list = node.querySelector(".face-warnings");
    list.replaceChildren();
    for (const w of p.warnings || []) {
      const li = document.createElement("li");
      li.textContent = w;
      list.appendChild(li);
    }
    if (p.mode === "faces") drawFaces(node, p);
  }

  // Face mode: the uploaded image with every face's box and P(fake); the deciding (most suspicious) face is
  // drawn thicker. Boxes are in the pixels of the decoded upload (EXIF orientation applied, as browsers do).
  function drawFaces(node, p) {
    const faces = p.faces || [];
    const notes = node.querySelector(".face-notes");
    notes.textContent = faces.length
      ? faces.length + " face" + (faces.length > 1 ? "s" : "") + " - decided by " + p.decided_by
      : "face mode: no face found, whole image scored";
    if (!faces.length) return;
    node.classList.add("has-faces");  // the card spans the row so the boxes are readable
    let top = 0;
    faces.forEach((f, i) => { if (f.score > faces[top].score) top = i; });
    const canvas = node.querySelector(".faces-view");
    const img = new Image();
    img.onload = () => {
      const k = Math.min(1, 640 / img.naturalWidth);
      canvas.width = Math.round(img.naturalWidth * k);
      canvas.height = Math.round(img.naturalHeight * k);
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      ctx.font = "bold 13px system-ui, sans-serif";
      ctx.textBaseline = "top";
      faces.forEach((f, i) => {
        const [x, y, w, h] = f.box.map((v) => v * k);
        const color = f.label === "fake" ? "#c62828" : "#2e7d32";
        ctx.lineWidth = i === top ? 4 : 2;
        ctx.strokeStyle = color;
        ctx.strokeRect(x, y, w, h);
        const text = (i + 1) + ": " + f.score.toFixed(2) + (i === top ? " decides" : "");
        const tw = ctx.measureText(text).width + 6;
        const ty = y >= 18 ? y - 18 : y + h;
        ctx.fillStyle = color;
        ctx.fillRect(x, ty, tw, 18);
        ctx.fillStyle = "#fff";
        ctx.fillText(text, x + 3, ty + 2);
      });
      canvas.hidden = false;
    };
    img.src = node.querySelector(".thumb").src;
  }

  function failCard(node, message) {
    node.classList.add("failed");
    node.querySelector(".label").textContent = "not scored";
    node.querySelector(".error").textContent = message;
    node.querySelector(".bar").hidden = true;
  }

  function formFor(files, field) {
    const fd = new FormData();
    for (const f of files) fd.append(field, f, f.name);
    const caseId = $("#case-id").value.trim();
    if (caseId) fd.append("case_id", caseId);
    const thr = $("#threshold").value.trim();
    if (thr) fd.append("threshold", thr);
    return fd;
  }

  async function scan(fileList) {
    const files = Array.from(fileList);
    if (!files.length) return;
    const results = $("#results");
    const cards = files.map(makeCard);
    for (let i = cards.length - 1; i >= 0; i--) results.prepend(cards[i]);
    $("#status").textContent = "scoring " + files.length + " image" + (files.length > 1 ? "s" : "") + "...";
    // One request per image: each verdict appears as soon as it is ready, and one bad file fails alone.
    let done = 0;
    await Promise.all(files.map(async (file, i) => {
      try {
        const r = await api("/predict", { method: "POST", body: formFor([file], "files") });
        fillCard(cards[i], r.predictions[0]);
      } catch (e) {
        failCard(cards[i], e.message);
      }
      done += 1;
      $("#status").textContent = done + " of " + files.length + " done";
    }));
    $("#status").textContent = files.length + " image" + (files.length > 1 ? "s" : "") + " scored";
  }

  async function explain(node, file) {
    const button = node.querySelector(".explain");
    button.disabled = true;
    button.textContent = "computing Grad-CAM...";
    const fd = formFor([file], "file");
    fd.append("record", "false");
    try {
      const r = await api("/explain", { method: "POST", body: fd });
      node.querySelector(".overlay").src = "data:image/png;base64," + r.overlay_png;
      if (r.panel_png) node.querySelector(".panel").src = "data:image/png;base64," + r.panel_png;
      else node.querySelector("details").hidden = true;
      node.querySelector(".cam").hidden = false;
      button.hidden = true;
    } catch (e) {
      button.textContent = e.status === 501 ? "Grad-CAM unavailable" : "Grad-CAM failed";
      node.querySelector(".error").textContent = e.message;
    }
  }

  async function forensics(node, file) {
    const button = node.querySelector(".forensics-btn");
    button.disabled = true;
    button.textContent = "analysing...";
    const fd = formFor([file], "file");
    fd.append("record", "false");
    try {
      const r = await api("/forensics", { method: "POST", body: fd });
      const box = node.querySelector(".forensics");
      if (r.ela_png) box.querySelector(".ela").src = "data:image/png;base64," + r.ela_png;
      if (r.noise_png) box.querySelector(".noise").src = "data:image/png;base64," + r.noise_png;
      const flags = box.querySelector(".flags");
      flags.textContent = "";
      for (const f of (r.summary && r.summary.flags) || []) {
        const li = document.createElement("li");
        li.textContent = f.severity + ": " + f.message;
        flags.appendChild(li);
      }
      if (!flags.children.length) {
        const li = document.createElement("li");
        li.textContent = "no flags raised";
        flags.appendChild(li);
      }
      const link = box.querySelector(".report");
      link.href = URL.createObjectURL(new Blob([r.report_html], { type: "text/html" }));
      link.download = file.name.replace(/\.[^.]*$/, "") + "-report.html";
      box.hidden = false;
      button.hidden = true;
    } catch (e) {
      button.textContent = e.status === 501 ? "Forensics unavailable" : "Forensics failed";
      node.querySelector(".error").textContent = e.message;
    }
  }

  function setupDrop() {
    const drop = $("#drop");
    const input = $("#file-input");
    input.addEventListener("change", () => { scan(input.files); input.value = ""; });
    ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.remove("over");
    }));
    drop.addEventListener("drop", (e) => { if (e.dataTransfer) scan(e.dataTransfer.files); });
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
    // Dropping a file outside the zone must not navigate away from the page.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
  }

  // ---- history --------------------------------------------------------------------------------
  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  async function loadHistory() {
    const params = new URLSearchParams({ limit: String(PAGE), offset: String(historyOffset) });
    const caseId = $("#history-case").value.trim();
    if (caseId) params.set("case_id", caseId);
    const tbody = $("#history tbody");
    try {
      const page = await api("/scans?" + params.toString());
      tbody.textContent = "";
      for (const s of page.items) {
        const tr = document.createElement("tr");
        cell(tr, String(s.id));
        cell(tr, s.created_at.replace("T", " ").slice(0, 19));
        cell(tr, s.file_name, "file");
        cell(tr, s.label, s.label);
        cell(tr, fmtScore(s.score));
        cell(tr, s.threshold.toFixed(3));
        cell(tr, s.case_id || "");
        cell(tr, (s.width && s.height ? s.width + "x" + s.height + ", " : "") + fmtBytes(s.size_bytes));
        cell(tr, s.model_id);
        tbody.appendChild(tr);
      }
      const last = Math.min(page.offset + page.items.length, page.total);
      $("#history-count").textContent = page.total
        ? "scans " + (page.offset + 1) + "-" + last + " of " + page.total
        : "no scans yet";
      $("#history-prev").disabled = page.offset === 0;
      $("#history-next").disabled = last >= page.total;
    } catch (e) {
      $("#history-count").textContent = "could not load history: " + e.message;
    }
  }

  // ---- tabs -----------------------------------------------------------------------------------
  function selectTab(name) {
    for (const t of ["scan", "history"]) {
      $("#tab-" + t).setAttribute("aria-selected", String(t === name));
      $("#panel-" + t).hidden = t !== name;
    }
    if (name === "history") loadHistory();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#tab-scan").addEventListener("click", () => selectTab("scan"));
    $("#tab-history").addEventListener("click", () => selectTab("history"));
    $("#history-refresh").addEventListener("click", () => { historyOffset = 0; loadHistory(); });
    $("#history-prev").addEventListener("click", () => { historyOffset = Math.max(0, historyOffset - PAGE); loadHistory(); });
    $("#history-next").addEventListener("click", () => { historyOffset += PAGE; loadHistory(); });
    $("#save-key").addEventListener("click", () => {
      try { localStorage.setItem(KEY_STORE, $("#api-key").value.trim()); } catch (e) { /* private mode */ }
      $("#auth").hidden = true;
      $("#auth-msg").textContent = "";
    });
    setupDrop();
    loadHealth();
  });
})();
