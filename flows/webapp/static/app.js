// lineargan-edit serve: the two pages (annotate & train, edit & sample) over the JSON API.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, cls: 1, annotate: null, edit: null, trainJob: null, sieJob: null, history: [] };

function fileUrl(path, download) {
  return `api/file?path=${encodeURIComponent(path)}${download ? "&download=true" : ""}&t=${Date.now()}`;
}

function say(text, info) {
  const box = $("message");
  box.textContent = text;
  box.className = info ? "info" : "";
  box.hidden = !text;
}

// Every request: JSON in and out; an error answer ({error, fix}) is shown in the page.
async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) {
    say(`${data.error}. Fix: ${data.fix}`);
    throw new Error(data.error);
  }
  return data;
}

function colours() {
  return state.info.classes.map((c) => c.rgb);
}

// A label map drawn into a canvas at its own resolution (CSS scales it, pixelated).
function drawLabels(canvas, labels) {
  const res = state.info.resolution;
  canvas.width = res;
  canvas.height = res;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(res, res);
  const rgb = colours();
  for (let i = 0; i < labels.length; i++) {
    const c = rgb[labels[i]];
    img.data.set([c[0], c[1], c[2], 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

// The painting canvas: the image under the mask, painted with real mouse strokes.
class MaskEditor {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.labels = null;
    this.image = null;
    this.undo = [];
    this.last = null;
    canvas.addEventListener("mousedown", (e) => this.down(e));
    canvas.addEventListener("mousemove", (e) => this.move(e));
    window.addEventListener("mouseup", () => { this.last = null; });
  }
  get res() { return state.info.resolution; }
  load(imagePath, labels) {
    this.labels = Uint8Array.from(labels);
    this.undo = [];
    this.image = new Image();
    this.image.onload = () => this.draw();
    this.image.src = fileUrl(imagePath);
    this.draw();
  }
  setLabels(labels) {
    this.undo.push(this.labels.slice());
    this.labels = Uint8Array.from(labels);
    this.draw();
  }
  where(e) {
    const box = this.canvas.getBoundingClientRect();
    return [
      Math.floor(((e.clientX - box.left) / box.width) * this.res),
      Math.floor(((e.clientY - box.top) / box.height) * this.res),
    ];
  }
  down(e) {
    if (!this.labels || e.button !== 0) return;
    this.undo.push(this.labels.slice());
    this.last = this.where(e);
    this.paint(this.last, this.last);
  }
  move(e) {
    if (!this.last || !(e.buttons & 1)) { this.last = null; return; }
    const p = this.where(e);
    this.paint(this.last, p);
    this.last = p;
  }
  paint(a, b) {
    const r = Number($("brush").value) / 2;
    const cls = $("mode-erase").checked ? 0 : state.cls;
    const n = Math.max(1, Math.ceil(Math.hypot(b[0] - a[0], b[1] - a[1])));
    for (let s = 0; s <= n; s++) {
      const cx = a[0] + ((b[0] - a[0]) * s) / n;
      const cy = a[1] + ((b[1] - a[1]) * s) / n;
      for (let y = Math.floor(cy - r); y <= Math.ceil(cy + r); y++) {
        for (let x = Math.floor(cx - r); x <= Math.ceil(cx + r); x++) {
          if (x < 0 || y < 0 || x >= this.res || y >= this.res) continue;
          if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r + 0.25) this.labels[y * this.res + x] = cls;
        }
      }
    }
    this.draw();
  }
  back() {
    if (this.undo.length) { this.labels = this.undo.pop(); this.draw(); }
  }
  draw() {
    const { ctx, canvas } = this;
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (this.image && this.image.complete && this.image.naturalWidth) {
      ctx.drawImage(this.image, 0, 0, canvas.width, canvas.height);
    }
    if (!this.labels) return;
    const overlay = document.createElement("canvas");
    drawLabels(overlay, this.labels);
    ctx.globalAlpha = Number($("opacity").value) / 100;
    ctx.drawImage(overlay, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }
}

function thumbs(container, samples, onPick, active) {
  container.replaceChildren();
  for (const s of samples) {
    const img = document.createElement("img");
    img.src = fileUrl(s.image);
    img.title = s.path;
    img.dataset.path = s.path;
    if (active && s.path === active) img.classList.add("active");
    img.addEventListener("click", () => onPick(s));
    container.appendChild(img);
  }
}

// -- jobs: polled until they end ---------------------------------------------------------------

async function follow(job, bar, label, onTick) {
  while (true) {
    const view = await api("GET", `api/jobs/${job.id}`);
    bar.max = Math.max(view.total, 1);
    bar.value = view.done;
    label.textContent = view.state === "running" ? `running ${view.done}/${view.total}` : view.state;
    if (onTick) onTick(view);
    if (!["queued", "running"].includes(view.state)) {
      if (view.state === "failed") say(`${view.error.error}. Fix: ${view.error.fix}`);
      return view;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

// -- page 1: annotate and train -------------------------------------------------------------

let annotateEditor;
let editEditor;

async function refreshAnnotate() {
  const samples = await api("GET", "api/samples?folder=annotate");
  thumbs($("annotate-list"), samples, pickAnnotate, state.annotate && state.annotate.path);
  const training = await api("GET", "api/samples?folder=train");
  $("training-count").textContent = training.length;
  thumbs($("training-list"), training, pickAnnotate);
}

async function pickAnnotate(sample, source) {
  const mask = await api("GET", `api/mask?path=${encodeURIComponent(sample.path)}&source=${source || "file"}`);
  state.annotate = sample;
  $("annotate-name").textContent = sample.name;
  annotateEditor.load(sample.image, mask.labels);
  $("annotate-status").textContent = `${sample.name}: ${source || "saved"} mask`;
  for (const img of $("annotate-list").children) img.classList.toggle("active", img.dataset.path === sample.path);
}

async function restartMask(source) {
  if (!state.annotate) return;
  const mask = await api("GET", `api/mask?path=${encodeURIComponent(state.annotate.path)}&source=${source}`);
  annotateEditor.setLabels(mask.labels);
  $("annotate-status").textContent = `${state.annotate.name}: ${source} mask`;
}

async function addTraining() {
  if (!state.annotate) return say("sample an image and paint its mask first");
  const out = await api("POST", "api/annotations", { path: state.annotate.path, labels: Array.from(annotateEditor.labels) });
  $("annotate-status").textContent = `${state.annotate.name} added (${out.training_set} in the training set)`;
  await refreshAnnotate();
  // move on to the next image not yet annotated
  const list = Array.from($("annotate-list").children);
  const names = new Set(Array.from($("training-list").children).map((i) => i.dataset.path.split("/").pop()));
  const next = list.find((i) => !names.has(i.dataset.path.split("/").pop()));
  if (next) next.click();
}

async function train() {
  const iterations = $("iterations").value ? Number($("iterations").value) : null;
  const job = await api("POST", "api/train", { iterations });
  state.trainJob = job;
  say("");
  let shownSample = null;
  const view = await follow(job, $("train-progress"), $("train-state"), (v) => {
    if (v.loss !== null) $("train-loss").textContent = v.loss.toFixed(4);
    if (v.preview) {
      $("train-iou").textContent = v.preview.iou.toFixed(3);
      drawLabels($("heldout-lse"), v.preview.labels);
      if (shownSample !== v.preview.sample.path) {
        shownSample = v.preview.sample.path;
        $("heldout-image").src = fileUrl(v.preview.sample.image);
        api("GET", `api/mask?path=${encodeURIComponent(shownSample)}&source=file`).then((m) => drawLabels($("heldout-reference"), m.labels));
      }
    }
  });
  state.trainJob = null;
  if (view.state === "done") {
    say(`trained a ${view.result.n_shot}-shot LSE (${view.result.iterations} iterations) into the workspace's lse/`, true);
    await loadInfo();
  }
}

// -- page 2: edit and sample ------------------------------------------------------------------

async function refreshEdit() {
  const lists = await Promise.all(["samples", "imported", "edits", "scs"].map((f) => api("GET", `api/samples?folder=${f}`)));
  thumbs($("edit-list"), lists.flat(), (s) => pickEdit(s, true), state.edit && state.edit.path);
}

async function pickEdit(sample, remember) {
  if (!state.info.lse) return say("train a few-shot LSE first (page 1)");
  const mask = await api("GET", `api/mask?path=${encodeURIComponent(sample.path)}&source=lse`);
  if (remember && state.edit && state.edit.path !== sample.path) state.history.push(state.edit);
  state.edit = sample;
  state.editMask = mask.labels;
  $("edit-name").textContent = sample.name;
  editEditor.load(sample.image, mask.labels);
  $("original-image").src = fileUrl(sample.image);
  drawLabels($("original-mask"), mask.labels);
  for (const img of $("edit-list").children) img.classList.toggle("active", img.dataset.path === sample.path);
}

function downloads(sample) {
  const box = $("edit-downloads");
  box.replaceChildren("Download:");
  for (const [kind, path] of [["image", sample.image], ["mask", sample.mask], ["latent", sample.latent]]) {
    const a = document.createElement("a");
    a.href = fileUrl(path, true);
    a.textContent = path.split("/").pop();
    a.dataset.kind = kind;
    a.setAttribute("download", path.split("/").pop());
    box.appendChild(a);
  }
}

async function runSie() {
  if (!state.edit) return say("pick or sample an image first");
  const job = await api("POST", "api/edit", {
    path: state.edit.path, labels: Array.from(editEditor.labels), steps: Number($("sie-steps").value),
  });
  state.sieJob = job;
  say("");
  const view = await follow(job, $("sie-progress"), $("sie-state"));
  state.sieJob = null;
  if (view.state !== "done") return;
  const { edited, score } = view.result;
  $("edited-image").src = fileUrl(edited.image);
  const mask = await api("GET", `api/mask?path=${encodeURIComponent(edited.path)}&source=file`);
  drawLabels($("edited-mask"), mask.labels);
  $("edit-score").textContent = score === null ? "the painted mask equals the LSE's: nothing to edit"
    : `${score.region_px} px changed class; ${(100 * score.lse).toFixed(0)} % of them have the painted class by the LSE` +
      (score.reference === null ? "" : `, ${(100 * score.reference).toFixed(0)} % by ${score.segmenter} (${(100 * score.reference_before).toFixed(0)} % before)`);
  downloads(edited);
  const original = state.edit;
  await refreshEdit();
  state.history.push(original);
  await pickEdit(edited, false);
  $("original-image").src = fileUrl(original.image);
  const before = await api("GET", `api/mask?path=${encodeURIComponent(original.path)}&source=lse`);
  drawLabels($("original-mask"), before.labels);
}

async function runScs() {
  if (!state.edit) return say("pick or sample an image and paint a layout first");
  const job = await api("POST", "api/scs", {
    labels: Array.from(editEditor.labels), n: Number($("scs-n").value), steps: Number($("sie-steps").value),
  });
  const view = await follow(job, $("sie-progress"), $("scs-state"));
  if (view.state === "done") thumbs($("scs-results"), view.result.samples, (s) => pickEdit(s, true));
}

async function importSidecar(file) {
  const text = await file.text();
  let sidecar;
  try { sidecar = JSON.parse(text); } catch (e) { return say(`${file.name} is not JSON (${e.message})`); }
  const sample = await api("POST", "api/import", { name: file.name.replace(/\.json$/, "").replace(/[^A-Za-z0-9_.-]/g, "_"), sidecar });
  await refreshEdit();
  await pickEdit(sample, true);
}

// -- set-up ---------------------------------------------------------------------------------

async function loadInfo() {
  state.info = await api("GET", "api/info");
  const i = state.info;
  $("model").textContent = `${i.generator} (${i.resolution}×${i.resolution}) · reference ${i.segmenter} · ` +
    (i.lse ? `LSE: ${i.lse.n_shot}-shot, ${i.lse.iterations} iterations` : "no LSE yet") + ` · workspace ${i.workspace}`;
}

function palette() {
  const box = $("palette");
  box.replaceChildren();
  for (const c of state.info.classes) {
    const b = document.createElement("button");
    b.id = `class-${c.index}`;
    b.textContent = c.name;
    b.style.background = c.hex;
    b.style.color = 0.299 * c.rgb[0] + 0.587 * c.rgb[1] + 0.114 * c.rgb[2] < 128 ? "#fff" : "#000";
    b.classList.toggle("active", c.index === state.cls);
    b.addEventListener("click", () => {
      state.cls = c.index;
      $("mode-erase").checked = false;
      for (const o of box.children) o.classList.toggle("active", o === b);
    });
    box.appendChild(b);
  }
}

function showPage(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.page === name);
  $("page-annotate").hidden = name !== "annotate";
  $("page-edit").hidden = name !== "edit";
  if (name === "edit") refreshEdit();
}

async function main() {
  await loadInfo();
  palette();
  annotateEditor = new MaskEditor($("annotate-canvas"));
  editEditor = new MaskEditor($("edit-canvas"));
  const click = (id, fn) => $(id).addEventListener("click", () => fn().catch(() => {}));
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showPage(tab.dataset.page));
  $("brush").addEventListener("input", () => { $("brush-value").textContent = $("brush").value; });
  $("opacity").addEventListener("input", () => { annotateEditor.draw(); editEditor.draw(); });
  click("sample-annotate", async () => {
    const made = await api("POST", "api/samples", { folder: "annotate", n: Number($("annotate-n").value) });
    await refreshAnnotate();
    await pickAnnotate(made[0]);
  });
  click("start-reference", () => restartMask("reference"));
  click("start-lse", () => restartMask("lse"));
  click("annotate-undo", async () => annotateEditor.back());
  click("add-training", addTraining);
  click("remove-training", async () => {
    if (!state.annotate) return;
    const out = await api("DELETE", `api/annotations?path=train/${encodeURIComponent(state.annotate.name)}`);
    $("annotate-status").textContent = `${state.annotate.name} removed (${out.training_set} in the training set)`;
    await refreshAnnotate();
  });
  click("train", train);
  click("train-cancel", async () => { if (state.trainJob) await api("POST", `api/jobs/${state.trainJob.id}/cancel`); });
  click("edit-sample", async () => {
    const made = await api("POST", "api/samples", { folder: "samples", n: 1 });
    await refreshEdit();
    await pickEdit(made[0], true);
  });
  click("edit-undo", async () => editEditor.back());
  click("edit-reset", async () => editEditor.setLabels(state.editMask));
  click("edit-back", async () => { const prev = state.history.pop(); if (prev) await pickEdit(prev, false); });
  click("run-sie", runSie);
  click("sie-cancel", async () => { if (state.sieJob) await api("POST", `api/jobs/${state.sieJob.id}/cancel`); });
  click("run-scs", runScs);
  $("import").addEventListener("change", (e) => { if (e.target.files[0]) importSidecar(e.target.files[0]).catch(() => {}); });
  await refreshAnnotate();
  const first = $("annotate-list").firstChild;
  if (first) first.click();
  document.body.dataset.ready = "true";
}

main().catch((e) => say(`the page could not start: ${e.message}`));
