// Loupe review: everything from the keyboard. No build step, no dependencies.
(() => {
  "use strict";
  const page = document.body.dataset.page;
  const help = document.getElementById("help");
  const $ = (sel) => document.querySelector(sel);
  const typing = (el) => el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
    (el.tagName === "INPUT" && !["checkbox", "radio", "submit", "button"].includes(el.type)));
  const go = (a) => { if (a && a.getAttribute("href")) location.href = a.getAttribute("href"); };
  const submit = (form) => { if (form) form.requestSubmit ? form.requestSubmit() : form.submit(); };

  const common = {
    "?": () => { help.hidden = !help.hidden; },
    q: () => { location.href = "/queue" + (page === "image" ? $("#back").search : ""); },
    l: () => { location.href = "/audit"; },
  };

  // --- queue page ---------------------------------------------------------
  const rows = [...document.querySelectorAll("tr.item")];
  let sel = 0;
  const mark = () => rows.forEach((r, i) => {
    r.classList.toggle("sel", i === sel);
    if (i === sel) r.scrollIntoView({block: "nearest"});
  });
  const queue = {
    j: () => { sel = Math.min(sel + 1, rows.length - 1); mark(); },
    k: () => { sel = Math.max(sel - 1, 0); mark(); },
    ArrowDown: () => queue.j(), ArrowUp: () => queue.k(),
    Enter: () => rows[sel] && (location.href = rows[sel].dataset.href),
    o: () => queue.Enter(),
    x: () => { const c = rows[sel] && rows[sel].querySelector("input[type=checkbox]"); if (c) c.checked = !c.checked; },
    "*": () => { const all = rows.every((r) => r.querySelector("input").checked);
                 rows.forEach((r) => { r.querySelector("input").checked = !all; }); },
    a: () => {   // approve the selected row right here
      const r = rows[sel]; if (!r) return;
      const f = document.createElement("form");
      f.method = "post"; f.action = `/image/${r.dataset.id}/approve`;
      for (const [k, v] of [["csrf", $("meta[name=csrf]").content], ["ctx", $("#batch input[name=ctx]").value]]) {
        const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i);
      }
      document.body.appendChild(f); f.submit();
    },
    A: () => submit($("#batch")),
    f: () => { const s = $("#filters select"); if (s) s.focus(); },
  };

  // --- image page ---------------------------------------------------------
  const viewer = $("#viewer");
  const VIEWS = [["side", "side by side"], ["swipe", "swipe"], ["toggle", "toggle"]];
  const OVERLAYS = ["none", "mask", "defects", "detail"];
  const ZOOMS = [0, 1, 2, 4];
  let focus = {x: 0.5, y: 0.5};
  const cycle = (list, cur) => list[(list.indexOf(cur) + 1) % list.length];
  function lens() {
    if (!viewer) return;
    const z = Number(viewer.dataset.zoom);
    $("#zoom-name").textContent = z ? `${z * 100}%` : "off";
    viewer.querySelectorAll(".pane").forEach((pane) => {
      const img = pane.querySelector(".photo"), el = pane.querySelector(".lens");
      el.hidden = !z;
      if (!z || !img.naturalWidth) return;
      const w = img.naturalWidth * z, h = img.naturalHeight * z;
      const box = img.getBoundingClientRect(), size = el.getBoundingClientRect().width || 240;
      el.style.left = `${focus.x * box.width - size / 2}px`;
      el.style.top = `${focus.y * box.height - size / 2}px`;
      el.style.backgroundImage = `url("${img.src}")`;
      el.style.backgroundSize = `${w}px ${h}px`;
      el.style.backgroundPosition = `${size / 2 - focus.x * w}px ${size / 2 - focus.y * h}px`;
    });
  }
  function overlay(kind) {
    viewer.dataset.overlay = kind;
    $("#overlay-name").textContent = kind;
    viewer.querySelectorAll(".ov").forEach((o) => {
      o.hidden = kind === "none";
      if (kind !== "none") o.src = `/img/${viewer.dataset.id}/${kind}`;
    });
  }
  const pan = (dx, dy) => (e) => {
    const z = viewer && Number(viewer.dataset.zoom);
    const step = e.shiftKey ? 0.01 : 0.05;
    if (z) {
      focus = {x: Math.min(1, Math.max(0, focus.x + dx * step)), y: Math.min(1, Math.max(0, focus.y + dy * step))};
      lens();
    } else if (viewer && viewer.dataset.view === "swipe" && dx) {
      const split = parseFloat(viewer.style.getPropertyValue("--split")) || 50;
      viewer.style.setProperty("--split", `${Math.min(100, Math.max(0, split + dx * step * 100))}%`);
    }
  };
  const image = {
    a: () => submit($("#approve-form")),
    r: () => { const n = $("#reject-note"); if (n) n.focus(); },
    e: () => { const n = $("#rerun-strength"); if (n) n.focus(); },
    j: () => go($("#next")), k: () => go($("#prev")),
    s: () => { if (!viewer) return; const v = cycle(VIEWS.map((x) => x[0]), viewer.dataset.view);
               viewer.dataset.view = v; $("#view-name").textContent = VIEWS.find((x) => x[0] === v)[1]; lens(); },
    b: () => { if (viewer) viewer.dataset.flip = viewer.dataset.flip === "1" ? "0" : "1"; },
    " ": () => image.b(),
    o: () => viewer && overlay(cycle(OVERLAYS, viewer.dataset.overlay)),
    z: () => { if (!viewer) return; viewer.dataset.zoom = String(cycle(ZOOMS, Number(viewer.dataset.zoom))); lens(); },
    ArrowLeft: pan(-1, 0), ArrowRight: pan(1, 0), ArrowUp: pan(0, -1), ArrowDown: pan(0, 1),
  };
  if (viewer) {
    viewer.addEventListener("mousemove", (e) => {
      const img = e.target.closest(".pane") && e.target.closest(".pane").querySelector(".photo");
      if (!img) return;
      const box = img.getBoundingClientRect();
      focus = {x: (e.clientX - box.left) / box.width, y: (e.clientY - box.top) / box.height};
      if (Number(viewer.dataset.zoom)) lens();
    });
  }

  const keys = {queue, image}[page] || {};
  if (page === "queue") mark();
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { if (document.activeElement) document.activeElement.blur(); help.hidden = true; return; }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (e.target.tagName === "INPUT" && e.key === " ") return;   // Space ticks a focused checkbox
    if (e.target.tagName === "BUTTON" && (e.key === "Enter" || e.key === " ")) return;
    const handler = keys[e.key] || common[e.key];
    if (handler) { e.preventDefault(); handler(e); }
  });
})();
