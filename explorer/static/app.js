// The explorer page: sends the user's actions to the server and draws the frames it
// gets back. No physics here: every step runs on the server, in the project's stepper.
"use strict";

const HEADER_BYTES = 12;            // explorer/session.py FRAME_HEADER
const LAYERS = ["V", "F", "K", "target"];
const PLOT_POINTS = 600;            // similarity samples kept per stored pattern
const COLOURS = ["#ffb000", "#4cc9f0", "#f72585", "#7bd389", "#b892ff", "#ff6b6b", "#e0e0e0", "#ffd6a5"];

const $ = (id) => document.getElementById(id);
const state = { server: null, history: [], lastStep: Infinity, starts: 0, frames: 0, fps: 0, errors: [], infos: [] };

// ---- colour maps: 256-entry lookup tables ---------------------------------------------
function lut(stops) {
  const table = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const t = i / 255 * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
    for (let c = 0; c < 3; c++) table[i * 4 + c] = stops[k][c] + f * (stops[k + 1][c] - stops[k][c]);
    table[i * 4 + 3] = 255;
  }
  return table;
}
const MAGMA = lut([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]]);
const FIELD = lut([[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]]);
const GRAY = lut([[0, 0, 0], [255, 255, 255]]);

function draw(canvas, width, height, pixels, table) {
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const out = image.data;
  for (let i = 0; i < pixels.length; i++) {
    const j = pixels[i] * 4;
    out[i * 4] = table[j]; out[i * 4 + 1] = table[j + 1]; out[i * 4 + 2] = table[j + 2]; out[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

// ---- the channel --------------------------------------------------------------------------
const scheme = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${scheme}://${location.host}/ws`);
ws.binaryType = "arraybuffer";

function send(message) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}
function sendRaw(data) {           // for the tests: whatever a page could send
  if (ws.readyState === WebSocket.OPEN) ws.send(data);
}

ws.onopen = () => setStatus();
ws.onclose = () => { $("status").textContent = "disconnected: reload the page"; };
ws.onmessage = (event) => {
  if (typeof event.data === "string") onMessage(JSON.parse(event.data));
  else onFrame(event.data);
};

function onMessage(message) {
  if (message.type === "error") {
    state.errors.push(message.message);
    const box = $("error");
    box.textContent = message.message;
    box.hidden = false;
  } else if (message.type === "info") {
    state.infos.push(message.message);
    $("info").textContent = message.message;
    $("error").hidden = true;
  } else if (message.type === "state") {
    onState(message);
  }
}

function onFrame(buffer) {
  const view = new DataView(buffer);
  const step = view.getUint32(0, true), height = view.getUint16(4, true), width = view.getUint16(6, true);
  const layer = LAYERS[view.getUint8(8)], count = view.getUint8(9);
  const sims = [];
  for (let i = 0; i < count; i++) sims.push(view.getFloat32(HEADER_BYTES + 4 * i, true));
  const pixels = new Uint8Array(buffer, HEADER_BYTES + 4 * count, width * height);
  if (layer === "target") { draw($("pattern"), width, height, pixels, GRAY); return; }
  draw($("medium"), width, height, pixels, layer === "V" ? MAGMA : FIELD);
  countFrame();
  record(step, sims);
}

// ---- similarity: the list and the plot ---------------------------------------------------
function record(step, sims) {
  if (step < state.lastStep || sims.length !== state.history.length) {
    state.history = sims.map(() => []);           // a new start: a new curve
    state.starts += 1;
  }
  state.lastStep = step;
  sims.forEach((value, i) => {
    const curve = state.history[i];
    if (!curve.length || curve[curve.length - 1][0] !== step) curve.push([step, value]);
    if (curve.length > PLOT_POINTS) curve.shift();
  });
  const names = state.server ? state.server.stored : [];
  const list = $("sims");
  while (list.children.length > sims.length) list.lastChild.remove();
  sims.forEach((value, i) => {
    let item = list.children[i];
    if (!item) { item = document.createElement("li"); item.id = `sim-${i}`; list.appendChild(item); }
    item.style.color = COLOURS[i % COLOURS.length];
    item.dataset.value = value.toFixed(4);
    item.textContent = `${names[i] || "pattern " + (i + 1)}: ${value.toFixed(3)}`;
  });
  $("status").dataset.step = step;
  setStatus(step);
  plot();
}

function plot() {
  const canvas = $("plot"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 28;
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, W, H);
  ctx.strokeStyle = "#444"; ctx.fillStyle = "#999"; ctx.font = "11px sans-serif";
  for (const y of [0, 0.5, 1]) {
    const py = H - pad / 2 - y * (H - pad);
    ctx.beginPath(); ctx.moveTo(pad, py); ctx.lineTo(W - 4, py); ctx.stroke();
    ctx.fillText(y.toFixed(1), 4, py + 4);
  }
  const all = state.history.flat();
  if (!all.length) return;
  const first = Math.min(...all.map((p) => p[0])), last = Math.max(...all.map((p) => p[0]), first + 1);
  ctx.fillText(`step ${first}`, pad, H - 2); ctx.fillText(`${last}`, W - 40, H - 2);
  state.history.forEach((curve, i) => {
    ctx.strokeStyle = COLOURS[i % COLOURS.length]; ctx.lineWidth = 2; ctx.beginPath();
    curve.forEach(([s, v], k) => {
      const x = pad + (s - first) / (last - first) * (W - pad - 4), y = H - pad / 2 - v * (H - pad);
      if (k) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
}

function countFrame() {
  state.frames += 1;
  const now = performance.now();
  state.window = state.window || { start: now, frames: 0 };
  state.window.frames += 1;
  if (now - state.window.start >= 1000) {
    state.fps = state.window.frames * 1000 / (now - state.window.start);
    state.window = { start: now, frames: 0 };
  }
}

function setStatus(step) {
  const s = state.server;
  if (!s) { $("status").textContent = "connected"; return; }
  const what = s.training ? `training ${s.stored[s.stored.length - 1]}` : s.running ? "running" : "paused";
  const shown = step === undefined ? s.step : step;
  $("status").textContent = `${s.grid}×${s.grid} · rule ${s.rule} · ${what} · step ${shown} · ${state.fps.toFixed(0)} frames/s`;
  $("status").dataset.mode = what.split(" ")[0];
}

// ---- the server's state: fill the controls ----------------------------------------------
function fill(select, values, labels) {
  const now = Array.from(select.options).map((o) => o.value).join("\n");
  if (now === values.join("\n")) return;
  const keep = select.value;
  select.replaceChildren(...values.map((v, i) => new Option(labels ? labels[i] : v, v)));
  if (values.includes(keep)) select.value = keep;
}

function onState(s) {
  state.server = s;
  fill($("rule"), s.rules); $("rule").value = s.rule;
  fill($("pattern-name"), s.patterns);
  fill($("cue-index"), s.stored.map((_, i) => String(i)), s.stored.map((n, i) => `${i + 1}: ${n}`));
  fill($("saved"), s.saved);
  $("grid").value = String(s.grid);
  $("stored").textContent = s.stored.length ? `stored: ${s.stored.join(", ")}` : "nothing stored yet";
  $("run").textContent = s.running ? "Pause" : "Run";
  $("speed").value = s.speed; $("speed-value").textContent = s.speed;
  for (const input of document.querySelectorAll("input[name=view]")) input.checked = input.value === s.view;
  $("range").textContent = s.view === "V" ? "V in [0, 1]" : `${s.view} in [0, 0.1] (blue low, red high)`;
  setStatus();
}

// ---- controls -----------------------------------------------------------------------------
const number = (id) => Number($(id).value);
const on = (id, fn) => $(id).addEventListener("click", fn);

on("run", () => send({ type: state.server && state.server.running ? "pause" : "run" }));
on("step", () => send({ type: "step" }));
on("reset", () => send({ type: "reset" }));
on("new", () => send({ type: "new", grid: number("grid"), rule: $("rule").value }));
on("use-pattern", () => send({ type: "pattern", name: $("pattern-name").value }));
on("clear-pattern", () => send({ type: "clear_pattern" }));
on("train", () => send({ type: "train", steps: number("train-steps") }));
on("clear-scars", () => send({ type: "clear_scars" }));
on("cue", () => send({ type: "cue", index: number("cue-index"), strength: number("cue-strength"),
                      fraction: number("cue-fraction"), noise: number("cue-noise") }));
on("kick", () => send({ type: "kick", level: number("kick-level"), noise: number("kick-noise") }));
on("save", () => send({ type: "save", name: $("session-name").value }));
on("load", () => send({ type: "load", name: $("saved").value }));
$("rule").addEventListener("change", () => send({ type: "rule", rule: $("rule").value }));
$("speed").addEventListener("input", () => {
  $("speed-value").textContent = $("speed").value;
  send({ type: "speed", steps: number("speed") });
});
for (const input of document.querySelectorAll("input[name=view]")) {
  input.addEventListener("change", () => send({ type: "view", layer: input.value }));
}
$("image").addEventListener("change", async () => {
  const file = $("image").files[0];
  if (file) ws.send(await file.arrayBuffer());      // checked and decoded on the server
  $("image").value = "";
});

// painting: a disc at each cell the pointer crosses, sent as checked coordinates
function painter(canvas, message) {
  let last = null;
  const cell = (event) => {
    const box = canvas.getBoundingClientRect();
    const x = Math.floor((event.clientX - box.left) / box.width * canvas.width);
    const y = Math.floor((event.clientY - box.top) / box.height * canvas.height);
    return [Math.min(Math.max(x, 0), canvas.width - 1), Math.min(Math.max(y, 0), canvas.height - 1)];
  };
  const paint = (event) => {
    const [x, y] = cell(event);
    if (last && last[0] === x && last[1] === y) return;
    last = [x, y];
    send({ ...message(event), x, y, radius: Math.max(1, Math.min(number("radius"), Math.floor(canvas.width / 4))) });
  };
  canvas.addEventListener("pointerdown", (event) => { canvas.setPointerCapture(event.pointerId); last = null; paint(event); });
  canvas.addEventListener("pointermove", (event) => { if (event.buttons) paint(event); });
  canvas.addEventListener("pointerup", () => { last = null; });
}
painter($("medium"), () => {
  const tool = document.querySelector("input[name=tool]:checked").value;
  return { type: "paint", layer: tool, value: tool === "cue" ? number("brush-level") : 0 };
});
painter($("pattern"), (event) => ({ type: "paint", layer: "target", value: event.shiftKey ? 0 : 0.8 }));

window.explorer = { send, sendRaw, state };
