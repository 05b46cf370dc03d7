// Loupe review: everything from the keyboard. No build step, no dependencies.
(() => {
  "use strict";
  const page = document.body.dataset.page;
  const help = document.getElementById("help");
  const $ = (sel) => document.querySelector(sel);
  const typing = (el) => el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
    (el.tagName === "INPUT" && !["checkbox", "radio", "submit", "button"].includes(el.type)));
  // once the page is leaving (a link followed, a decision submitted), keys wait for the next page:
  // a key pressed before it lands would act on this one (a second "a" would hit this image again)
  let leaving = false;
  const leave = (href) => { leaving = true; location.href = href; };
  const go = (a) => { if (a && a.getAttribute("href")) leave(a.getAttribute("href")); };
  const submit = (form) => { if (form) form.requestSubmit ? form.requestSubmit() : form.submit(); };

  const common = {
    "?": () => { help.hidden = !help.hidden; },
    q: () => leave("/queue" + (page === "image" ? $("#back").search : "")),
    l: () => leave("/audit"),
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
    Enter: () => rows[sel] && leave(rows[sel].dataset.href),
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
      document.body.appendChild(f); leaving = true; f.submit();
    },
    A: () => submit($("#batch")),
    f: () => { const s = $("#filters select"); if (s) s.focus(); },
  };

  // --- image page ---------------------------------------------------------
  const viewer = $("#viewer");
  const VIEWS = [["side", "side by side"], ["swipe", "swipe"], ["toggle", "toggle"]];
  const OVERLAYS = ["none", ...((viewer && viewer.dataset.overlays) || "").split(" ").filter(Boolean)];
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
    viewer.querySelectorAll(".ov").forEach((o) => {   // "none" draws nothing: hidden and no image at all
      o.hidden = kind === "none";
      if (kind === "none") o.removeAttribute("src");
      else o.src = `/img/${viewer.dataset.id}/${kind}`;
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
  // --- full-resolution cut-out: 512 px tiles over a backdrop, findings' boxes on top ---------------
  const deep = $("#deep");
  const BACKDROPS = ["white", "checker", "grey", "black", "magenta"];
  const findings = [...document.querySelectorAll("li.finding")];
  const D = deep ? {w: +deep.dataset.width, h: +deep.dataset.height, levels: +deep.dataset.levels,
                    tile: +deep.dataset.tile, v: deep.dataset.version, id: deep.dataset.id} : null;
  const MAX_SCALE = 16;                         // 1600%: one source pixel is 16 screen pixels
  let cam = null;                               // {s: screen px per source px, cx, cy: source px at the centre}
  let fitted = true;
  const tiles = new Map();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const fitScale = () => Math.min(deep.clientWidth / D.w, deep.clientHeight / D.h) * 0.96;
  function backdrop(kind) {
    if (!deep) return;
    deep.dataset.backdrop = kind;
    document.querySelectorAll(".backdrops button").forEach((b) =>
      b.setAttribute("aria-pressed", String(b.dataset.backdrop === kind)));
    try { localStorage.setItem("loupe.backdrop", kind); } catch (err) { /* private mode */ }
  }
  function place(el, x0, y0, x1, y1) {       // source-pixel rectangle -> screen position in #deep
    const ox = deep.clientWidth / 2 - cam.cx * cam.s, oy = deep.clientHeight / 2 - cam.cy * cam.s;
    el.style.left = `${ox + x0 * cam.s}px`; el.style.top = `${oy + y0 * cam.s}px`;
    el.style.width = `${(x1 - x0) * cam.s}px`; el.style.height = `${(y1 - y0) * cam.s}px`;
  }
  function draw() {
    if (!deep || !deep.clientWidth) return;
    const fit = fitScale();
    if (!cam || fitted) cam = {s: fit, cx: D.w / 2, cy: D.h / 2};
    cam.s = clamp(cam.s, Math.min(fit, 1) * 0.5, MAX_SCALE);
    cam.cx = clamp(cam.cx, 0, D.w); cam.cy = clamp(cam.cy, 0, D.h);
    const level = clamp(Math.floor(Math.log2(1 / cam.s)), 0, D.levels - 1);
    const f = 2 ** level, span = D.tile * f;
    const lw = Math.ceil(D.w / f), lh = Math.ceil(D.h / f);          // the level's size in its own pixels
    place(deep.querySelector(".plate"), 0, 0, D.w, D.h);
    const x0 = cam.cx - deep.clientWidth / 2 / cam.s, x1 = cam.cx + deep.clientWidth / 2 / cam.s;
    const y0 = cam.cy - deep.clientHeight / 2 / cam.s, y1 = cam.cy + deep.clientHeight / 2 / cam.s;
    const want = new Set();
    const top = D.levels - 1, tf = 2 ** top;   // the coarsest level, one tile: shown until the sharp ones load
    const layer = deep.querySelector(".tiles");
    const show = (lv, tx, ty, extra) => {
      const key = `${lv}/${tx}/${ty}`, g = 2 ** lv;
      want.add(key);
      let img = tiles.get(key);
      if (!img) {
        img = new Image();
        img.alt = ""; img.draggable = false; img.dataset.level = lv; img.className = extra || "";
        img.onload = () => settle();
        img.src = `/img/${D.id}/tile/${lv}/${tx}/${ty}.png?v=${D.v}`;
        tiles.set(key, img);
        layer.appendChild(img);
      }
      const tw = Math.min(D.tile, Math.ceil(D.w / g) - tx * D.tile), th = Math.min(D.tile, Math.ceil(D.h / g) - ty * D.tile);
      place(img, tx * D.tile * g, ty * D.tile * g, tx * D.tile * g + tw * g, ty * D.tile * g + th * g);
    };
    if (level !== top) show(top, 0, 0, "base");
    for (let ty = Math.max(0, Math.floor(y0 / span)); ty <= Math.min(Math.ceil(lh / D.tile) - 1, Math.floor(y1 / span)); ty++) {
      for (let tx = Math.max(0, Math.floor(x0 / span)); tx <= Math.min(Math.ceil(lw / D.tile) - 1, Math.floor(x1 / span)); tx++) {
        show(level, tx, ty, "");
      }
    }
    for (const [key, img] of tiles) if (!want.has(key)) { img.remove(); tiles.delete(key); }
    settle();
    deep.querySelectorAll(".box").forEach((b) => {
      const [a, b2, c, d] = b.dataset.box.split(" ").map(Number);
      place(b, a * D.w, b2 * D.h, c * D.w, d * D.h);
    });
    deep.dataset.scale = cam.s.toFixed(4);
    deep.dataset.cx = cam.cx.toFixed(1); deep.dataset.cy = cam.cy.toFixed(1);
    deep.dataset.level = level;
    deep.dataset.pixelated = cam.s >= 2 ? "1" : "0";   // past 200%: see the pixels, not a blur
    $("#deep-zoom").textContent = fitted ? `fit (${Math.round(cam.s * 100)}%)` : `${Math.round(cam.s * 100)}%`;
  }
  function settle() {   // the coarse base layer goes once the sharp tiles are in (it would double a soft edge)
    const sharp = [...tiles.values()].filter((t) => t.className !== "base");
    const ready = sharp.every((t) => t.complete && t.naturalWidth);
    tiles.forEach((t) => { if (t.className === "base") t.style.visibility = ready ? "hidden" : "visible"; });
    deep.dataset.loaded = ready ? "1" : "0";
  }
  function zoomAt(factor, mx, my) {           // keep the source pixel under (mx, my) where it is
    if (!cam) return;
    const px = cam.cx + (mx - deep.clientWidth / 2) / cam.s, py = cam.cy + (my - deep.clientHeight / 2) / cam.s;
    fitted = false;
    cam.s = clamp(cam.s * factor, Math.min(fitScale(), 1) * 0.5, MAX_SCALE);
    cam.cx = px - (mx - deep.clientWidth / 2) / cam.s; cam.cy = py - (my - deep.clientHeight / 2) / cam.s;
    draw();
  }
  const zoomKey = (factor) => () => { if (deep) zoomAt(factor, deep.clientWidth / 2, deep.clientHeight / 2); };
  const panDeep = (dx, dy) => (e) => {
    const step = (e.shiftKey ? 0.02 : 0.1) / cam.s;
    fitted = false;
    cam.cx += dx * step * deep.clientWidth; cam.cy += dy * step * deep.clientHeight;
    draw();
  };
  function jump(n) {                          // zoom the viewer onto finding n's box (1-based)
    const li = findings[n - 1];
    if (!deep || !li || !li.dataset.box) return;
    const [a, b, c, d] = li.dataset.box.split(" ").map(Number);
    const bw = Math.max((c - a) * D.w, 1), bh = Math.max((d - b) * D.h, 1);
    fitted = false;
    cam = {s: clamp(Math.min(deep.clientWidth / bw, deep.clientHeight / bh) * 0.6, Math.min(fitScale(), 1), 8),
           cx: (a + c) / 2 * D.w, cy: (b + d) / 2 * D.h};
    findings.forEach((x, i) => x.classList.toggle("active", i === n - 1));
    deep.querySelectorAll(".box").forEach((x) => x.classList.toggle("active", x.dataset.n === String(n)));
    deep.dataset.finding = String(n);
    deep.scrollIntoView({block: "nearest"});
    deep.focus({preventScroll: true});
    draw();
  }
  if (deep) {
    findings.forEach((li, i) => {
      if (!li.dataset.box) return;
      const b = document.createElement("div");
      b.className = "box"; b.dataset.box = li.dataset.box; b.dataset.n = String(i + 1);
      const label = document.createElement("span");
      label.textContent = `${i + 1} ${li.querySelector(".reason").textContent}`;
      b.appendChild(label);
      deep.querySelector(".boxes").appendChild(b);
      li.querySelector(".jump").addEventListener("click", () => jump(i + 1));
    });
    document.querySelectorAll(".backdrops button").forEach((b) =>
      b.addEventListener("click", () => backdrop(b.dataset.backdrop)));
    let saved = null;
    try { saved = localStorage.getItem("loupe.backdrop"); } catch (err) { /* private mode */ }
    backdrop(BACKDROPS.includes(saved) ? saved : "white");
    let drag = null;
    deep.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      drag = {x: e.clientX, y: e.clientY};
      deep.setPointerCapture(e.pointerId); deep.classList.add("dragging"); deep.focus({preventScroll: true});
    });
    deep.addEventListener("pointermove", (e) => {
      if (!drag) return;
      fitted = false;
      cam.cx -= (e.clientX - drag.x) / cam.s; cam.cy -= (e.clientY - drag.y) / cam.s;
      drag = {x: e.clientX, y: e.clientY};
      draw();
    });
    const stop = () => { drag = null; deep.classList.remove("dragging"); };
    deep.addEventListener("pointerup", stop); deep.addEventListener("pointercancel", stop);
    deep.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = deep.getBoundingClientRect();
      zoomAt(Math.pow(1.0015, -e.deltaY * (e.deltaMode === 1 ? 33 : 1)), e.clientX - r.left, e.clientY - r.top);
    }, {passive: false});
    window.addEventListener("resize", draw);
    draw();
  }
  const deepKeys = {ArrowLeft: panDeep(-1, 0), ArrowRight: panDeep(1, 0), ArrowUp: panDeep(0, -1), ArrowDown: panDeep(0, 1)};

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
    g: () => deep && backdrop(cycle(BACKDROPS, deep.dataset.backdrop)),
    "+": zoomKey(1.5), "=": zoomKey(1.5), "-": zoomKey(1 / 1.5),
    0: () => { if (deep) { fitted = true; draw(); } },
    v: () => { if (deep) { deep.scrollIntoView({block: "nearest"}); deep.focus({preventScroll: true}); } },
  };
  for (let n = 1; n <= 9; n++) image[n] = () => jump(n);
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
  document.addEventListener("submit", () => { leaving = true; });
  window.addEventListener("pageshow", () => { leaving = false; });   // back to a page kept by the browser
  document.addEventListener("keydown", (e) => {
    if (leaving) { e.preventDefault(); return; }
    if (e.key === "Escape") { if (document.activeElement) document.activeElement.blur(); help.hidden = true; return; }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (e.target.tagName === "INPUT" && e.key === " ") return;   // Space ticks a focused checkbox
    if (e.target.tagName === "BUTTON" && (e.key === "Enter" || e.key === " ")) return;
    const handler = (deep && e.target === deep && deepKeys[e.key]) || keys[e.key] || common[e.key];
    if (handler) { e.preventDefault(); handler(e); }
  });
})();
