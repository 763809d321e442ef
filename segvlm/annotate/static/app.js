// segvlm annotate: the page. One video at a time: the frame with its masks on a canvas, tools, an object
// list and a timeline. Frames come from the server one at a time at display size; masks as COCO RLE; the
// updates of long jobs (propagation, auto-label) arrive as server-sent events.

import { paintRle } from "./rle.js";

const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
  [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180],
];
function colourOf(id) {
  // The fixed palette first, then well-spread hues (golden angle), so that 20+ objects stay distinct.
  if (id >= 1 && id <= PALETTE.length) return PALETTE[id - 1];
  const hue = ((id * 137.508) % 360) / 60, x = Math.round(255 * (1 - Math.abs((hue % 2) - 1)));
  return [[255, x, 60], [x, 255, 60], [60, 255, x], [60, x, 255], [x, 60, 255], [255, 60, x]][Math.floor(hue) % 6];
}
const css = (id, alpha = 1) => `rgba(${colourOf(id).join(",")},${alpha})`;

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const timelineCanvas = $("timeline");
const tctx = timelineCanvas.getContext("2d");

const state = {
  video: null, // /api/videos/{id}
  position: 0,
  tool: "click",
  selected: null, // track id
  newObject: false,
  brush: 12, // brush radius in frame pixels
  image: null, // HTMLImageElement of the current frame
  masks: new Map(), // position -> [objects]
  timeline: null,
  mark: null, // start of an approval range (K)
  playing: false,
  lastAction: performance.now(),
  drag: null, // {kind, start:[x,y], points:[[x,y]...]}
  events: null,
  warm: null,
};

// -- server ---------------------------------------------------------------------------------------------------
async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}
const base = () => `/api/videos/${encodeURIComponent(state.video.id)}`;

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

function activeSeconds() {
  // Time since the previous action, capped: a person who walked away is not annotating.
  const now = performance.now();
  const seconds = Math.min((now - state.lastAction) / 1000, 30);
  state.lastAction = now;
  return Math.round(seconds * 100) / 100;
}

// -- loading --------------------------------------------------------------------------------------------------
async function loadProject() {
  const project = await api("/api/project");
  const select = $("video");
  select.innerHTML = "";
  for (const video of project.videos) {
    const option = document.createElement("option");
    option.value = video.id;
    option.textContent = video.name;
    select.append(option);
  }
  const format = $("format");
  format.innerHTML = "";
  for (const item of project.formats) {
    const option = document.createElement("option");
    option.value = item.name;
    option.textContent = item.name;
    option.title = item.description;
    format.append(option);
  }
  if (project.query) $("query").value = project.query;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("video");
  await openVideo(project.videos.some((v) => v.id === wanted) ? wanted : project.videos[0].id);
}

async function openVideo(id) {
  $("video").value = id;
  state.video = await api(`/api/videos/${encodeURIComponent(id)}`);
  state.masks.clear();
  state.selected = state.video.tracks.length ? state.video.tracks[0].id : null;
  const params = new URLSearchParams(location.hash.slice(1));
  const frame = Number(params.get("frame") || 0);
  history.replaceState(null, "", `#video=${encodeURIComponent(id)}`);
  connectEvents();
  showJob(state.video.job);
  await refreshTimeline();
  await seek(Math.min(Math.max(frame, 0), state.video.frames - 1));
  renderObjects();
}

async function refreshVideo() {
  const video = await api(base());
  Object.assign(state.video, video);
  if (state.selected !== null && !video.tracks.some((t) => t.id === state.selected)) state.selected = null;
  renderObjects();
  $("undo").disabled = !video.can_undo;
  $("redo").disabled = !video.can_redo;
}

async function refreshTimeline() {
  state.timeline = await api(`${base()}/timeline`);
  drawTimeline();
}

let timelineTimer = null;
function refreshSoon() {
  // Throttled, not debounced: during a long propagation the timeline still fills in as frames arrive.
  if (timelineTimer !== null) return;
  timelineTimer = setTimeout(() => {
    timelineTimer = null;
    refreshTimeline();
    refreshVideo();
  }, 1000);
}

function frameSize() {
  const side = Math.max(view.clientWidth, view.clientHeight) * (window.devicePixelRatio || 1);
  return Math.min(4096, Math.max(256, Math.ceil(side / 256) * 256));
}

function loadImage(position) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`frame ${position} could not be loaded`));
    image.src = `${base()}/frames/${position}.jpg?size=${frameSize()}`;
  });
}

const MASK_CACHE = 2000; // frames of masks kept in the page

function cacheMasks(position, objects) {
  state.masks.delete(position);
  state.masks.set(position, objects);
  while (state.masks.size > MASK_CACHE) state.masks.delete(state.masks.keys().next().value); // oldest first
}

async function masksAt(position) {
  if (!state.masks.has(position)) {
    const data = await api(`${base()}/masks/${position}`);
    cacheMasks(position, data.objects);
  }
  return state.masks.get(position);
}

let loading = false; // a frame request is in flight
let wanted = null; // the latest position asked for while it was

async function seek(position) {
  // While a frame is loading, only the latest request is kept: dragging the timeline over a long video asks
  // for one frame at a time instead of queueing every position the pointer crossed.
  position = Math.min(Math.max(position, 0), state.video.frames - 1);
  state.position = position;
  $("frame-label").textContent = `frame ${position + 1} / ${state.video.frames}`;
  drawTimeline();
  if (loading) {
    wanted = position;
    return;
  }
  loading = true;
  try {
    const [image] = await Promise.all([loadImage(position), masksAt(position)]);
    if (state.position === position) {
      state.image = image;
      draw();
    }
  } catch (error) {
    say(error.message, true);
  } finally {
    loading = false;
  }
  if (wanted !== null && wanted !== position) {
    const next = wanted;
    wanted = null;
    return seek(next);
  }
  wanted = null;
  for (const next of [position + 1, position + 2]) {
    if (next < state.video.frames) new Image().src = `${base()}/frames/${next}.jpg?size=${frameSize()}`;
  }
  clearTimeout(state.warm);
  state.warm = setTimeout(() => api(`${base()}/warm`, { frame: position }).catch(() => {}), 300);
}

// -- drawing --------------------------------------------------------------------------------------------------
function layout() {
  const box = $("stage").getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  view.width = Math.round(box.width * ratio);
  view.height = Math.round(box.height * ratio);
  const tbox = timelineCanvas.getBoundingClientRect();
  timelineCanvas.width = Math.round(tbox.width * ratio);
  timelineCanvas.height = Math.round(tbox.height * ratio);
  draw();
  drawTimeline();
}

function fit() {
  // Where the frame sits on the canvas: scale from frame pixels to canvas pixels, and offsets.
  const { width, height } = state.video;
  const scale = Math.min(view.width / width, view.height / height);
  return { scale, x: (view.width - width * scale) / 2, y: (view.height - height * scale) / 2 };
}

let maskCanvas = null;
function draw() {
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, view.width, view.height);
  if (!state.video || !state.image) return;
  const { width, height } = state.video;
  const { scale, x, y } = fit();
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(state.image, x, y, width * scale, height * scale);
  const objects = state.masks.get(state.position) || [];
  if (!maskCanvas || maskCanvas.width !== width || maskCanvas.height !== height) {
    maskCanvas = document.createElement("canvas");
    maskCanvas.width = width;
    maskCanvas.height = height;
  }
  const mctx = maskCanvas.getContext("2d");
  const pixels = mctx.createImageData(width, height);
  const words = new Uint32Array(pixels.data.buffer);
  for (const obj of objects) {
    const [r, g, b] = colourOf(obj.track_id);
    const alpha = obj.track_id === state.selected ? 150 : 100;
    paintRle(obj.rle, words, width, height, (alpha << 24) | (b << 16) | (g << 8) | r);
  }
  mctx.putImageData(pixels, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(maskCanvas, x, y, width * scale, height * scale);
  for (const obj of objects) {
    const [x0, y0, x1, y1] = obj.box;
    ctx.strokeStyle = css(obj.track_id, obj.track_id === state.selected ? 1 : 0.7);
    ctx.lineWidth = obj.track_id === state.selected ? 3 : 1.5;
    ctx.strokeRect(x + x0 * scale, y + y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
    const size = Math.round(13 * (window.devicePixelRatio || 1));
    const text = `#${obj.track_id} ${obj.label}`;
    ctx.font = `${size}px sans-serif`;
    const tx = x + x0 * scale, ty = Math.max(y + y0 * scale - size - 4, 0);
    ctx.fillStyle = "rgba(0,0,0,0.65)";
    ctx.fillRect(tx, ty, ctx.measureText(text).width + 8, size + 4);
    ctx.fillStyle = css(obj.track_id);
    ctx.fillText(text, tx + 4, ty + size);
  }
  const timeline = state.timeline && state.timeline.tracks.find((t) => t.id === state.selected);
  if (timeline && timeline.locks.includes(state.position)) {
    ctx.fillStyle = "rgba(60,200,90,0.9)";
    ctx.fillText("✔ approved", x + 8, y + 20);
  }
  drawDrag(scale, x, y);
  const mode = state.newObject ? "new object: click, drag a box or paint on it" : toolHint();
  $("hint").textContent = mode;
}

function toolHint() {
  const target = state.selected === null ? "no object selected (N for a new one)" : `object #${state.selected}`;
  const tool = { click: `clicks on ${target}`, box: `box for ${target}`, brush: `brush on ${target} (${state.brush}px)`,
    eraser: `eraser on ${target} (${state.brush}px)` }[state.tool];
  const next = state.selected === null ? "" : " · F/R/G propagate · L approve";
  return `${tool}${next} · ? all keys`;
}

function drawDrag(scale, x, y) {
  const drag = state.drag;
  if (!drag) return;
  if (drag.kind === "box") {
    const [x0, y0] = drag.start;
    const [x1, y1] = drag.points[drag.points.length - 1];
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(x + Math.min(x0, x1) * scale, y + Math.min(y0, y1) * scale,
      Math.abs(x1 - x0) * scale, Math.abs(y1 - y0) * scale);
    ctx.setLineDash([]);
  } else {
    ctx.strokeStyle = drag.kind === "eraser" ? "rgba(0,0,0,0.6)" : css(state.selected || 1, 0.6);
    ctx.lineWidth = 2 * state.brush * scale;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    drag.points.forEach(([px, py], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x + px * scale, y + py * scale));
    if (drag.points.length === 1) ctx.lineTo(x + drag.points[0][0] * scale + 0.1, y + drag.points[0][1] * scale);
    ctx.stroke();
  }
}

const GUTTER = 84; // CSS pixels on the left of the timeline for the lane names

function timelineGeometry() {
  // Shared by drawing and pointer handling, in CSS pixels.
  const rect = timelineCanvas.getBoundingClientRect();
  const lanes = state.timeline ? state.timeline.tracks : [];
  const top = 16;
  const lane = Math.max(Math.min((rect.height - top) / Math.max(lanes.length, 1), 18), 4);
  return { rect, lanes, top, lane, left: GUTTER, span: Math.max(rect.width - GUTTER, 1) };
}

function drawTimeline() {
  const ratio = window.devicePixelRatio || 1;
  tctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const { rect, lanes, top, lane, left, span } = timelineGeometry();
  tctx.fillStyle = "#1b1b1f";
  tctx.fillRect(0, 0, rect.width, rect.height);
  if (!state.video || !state.timeline) return;
  const frames = state.video.frames;
  const px = (p) => left + (p / frames) * span;
  const wide = (a, b) => Math.max(px(b) - px(a), 1);
  tctx.fillStyle = "#333";
  tctx.fillRect(left, 0, span, top - 4);
  tctx.font = "11px sans-serif";
  tctx.fillStyle = "#8d8d98";
  tctx.fillText(`${state.position + 1} / ${frames}`, 4, 11);
  lanes.forEach((track, i) => {
    const y = top + i * lane;
    if (track.id === state.selected) {
      tctx.fillStyle = "#2a2a33";
      tctx.fillRect(0, y, rect.width, lane);
    }
    if (lane >= 10) {
      tctx.fillStyle = css(track.id);
      tctx.fillText(`#${track.id} ${track.label}`.slice(0, 13), 4, y + lane * 0.7);
    }
    tctx.fillStyle = css(track.id, 0.85);
    for (const [start, end] of track.runs) tctx.fillRect(px(start), y + lane * 0.2, wide(start, end + 1), lane * 0.6);
    tctx.fillStyle = "#3c3";
    for (const p of track.locks) tctx.fillRect(px(p), y + lane * 0.75, wide(p, p + 1), lane * 0.25);
    for (const prompt of track.prompts) {
      tctx.fillStyle = prompt.source === "detector" ? "#fff" : "#fd3";
      tctx.beginPath();
      tctx.arc(px(prompt.position) + 1, y + lane / 2, Math.max(lane * 0.22, 2), 0, 2 * Math.PI);
      tctx.fill();
    }
    tctx.fillStyle = "#f33";
    for (const w of track.warnings) {
      const wx = px(w.position);
      tctx.beginPath();
      tctx.moveTo(wx - 3, y);
      tctx.lineTo(wx + 3, y);
      tctx.lineTo(wx, y + 5);
      tctx.fill();
    }
  });
  const cell = wide(state.position, state.position + 1);
  if (cell > 4) {
    tctx.fillStyle = "rgba(255,255,255,0.12)";
    tctx.fillRect(px(state.position), 0, cell, rect.height);
  }
  tctx.fillStyle = "#fff";
  tctx.fillRect(px(state.position) + cell / 2 - 1, 0, 2, rect.height);
  if (state.mark !== null) {
    tctx.fillStyle = "#3c3";
    tctx.fillRect(px(state.mark), 0, 2, top);
  }
}

function renderObjects() {
  const list = $("object-list");
  list.innerHTML = "";
  const tracks = state.video ? state.video.tracks : [];
  $("no-objects").hidden = tracks.length > 0;
  tracks.forEach((track, i) => {
    const item = document.createElement("li");
    item.dataset.track = track.id;
    item.className = track.id === state.selected ? "selected" : "";
    item.innerHTML = `<span class="swatch" style="background:${css(track.id)}"></span>` +
      `<span class="key">${i < 9 ? i + 1 : ""}</span> #${track.id} <span class="label"></span>`;
    item.querySelector(".label").textContent = track.label;
    item.onclick = () => select(track.id);
    list.append(item);
  });
  $("undo").disabled = !(state.video && state.video.can_undo);
  $("redo").disabled = !(state.video && state.video.can_redo);
}

function select(trackId) {
  state.selected = trackId;
  state.newObject = false;
  renderObjects();
  draw();
  drawTimeline();
}

// -- edits ----------------------------------------------------------------------------------------------------
let pending = Promise.resolve();
function edit(body) {
  // Edits go to the server one after another, in the order they were made (an undo never overtakes a stroke).
  const frame = body.frame ?? state.position;
  pending = pending.then(() => sendEdit({ ...body, frame }));
  return pending;
}

async function sendEdit(body) {
  const frame = body.frame; // the answer belongs to this frame, wherever the page is now
  try {
    const data = await api(`${base()}/edit`, { frame, seconds: activeSeconds(), ...body });
    if (data.edit && /relabel|merge/.test(data.edit.action)) state.masks.clear(); // labels change on every frame
    for (const position of data.edit ? data.edit.frames : []) state.masks.delete(position);
    cacheMasks(frame, data.objects);
    state.video.can_undo = data.can_undo;
    state.video.can_redo = data.can_redo;
    if (data.edit && data.edit.track_id !== null && body.action === "add_object") state.selected = data.edit.track_id;
    state.newObject = false;
    say(data.edit ? data.edit.action.replace("_", " ") : "nothing to do");
    draw();
    await refreshVideo();
    await refreshTimeline();
    return data;
  } catch (error) {
    say(error.message, true);
    return null;
  }
}

function needsTrack() {
  if (state.selected === null) {
    say("select an object first (1-9), or press N to start a new one", true);
    return false;
  }
  return true;
}

async function promptEdit(kind, payload) {
  // kind: points | box | strokes. A new object when asked (N) or when nothing is selected.
  if (state.newObject || state.selected === null) {
    const label = $("new-label").value.trim() || "object";
    return edit({ action: "add_object", label, ...payload });
  }
  const action = { points: "add_points", box: "add_box", strokes: "paint" }[kind];
  return edit({ action, track_id: state.selected, ...payload });
}

async function propagate(direction, allTracks = false) {
  if (!allTracks && state.selected === null && state.video.tracks.length !== 1) {
    say("select the object to propagate (or Shift for every object)", true);
    return;
  }
  const track = allTracks ? null : (state.selected ?? state.video.tracks[0].id);
  try {
    const data = await api(`${base()}/propagate`, { frame: state.position, track_id: track, direction });
    showJob(data.job);
  } catch (error) {
    say(error.message, true);
  }
}

async function toggleLock(range = false) {
  if (!needsTrack()) return;
  const track = state.timeline.tracks.find((t) => t.id === state.selected);
  const locked = track && track.locks.includes(state.position);
  const body = { action: locked && !range ? "unlock" : "lock", track_id: state.selected };
  if (range && state.mark !== null) {
    body.frame = Math.min(state.mark, state.position);
    body.last_frame = Math.max(state.mark, state.position);
    state.mark = null;
  }
  const data = await api(`${base()}/edit`, { frame: state.position, ...body }).catch((e) => say(e.message, true));
  if (data) {
    say(body.action === "lock" ? "approved" : "approval withdrawn");
    await refreshVideo();
    await refreshTimeline();
    draw();
  }
}

async function cancelJob() {
  await api(`${base()}/cancel`, {}).catch(() => {});
}

function showJob(job) {
  const running = job && job.state === "running";
  $("cancel").hidden = !running;
  $("job").textContent = running ? `${job.kind} ${job.done}/${job.total || "?"}` : "";
  if (job && job.state !== "running") say(`${job.kind} ${job.state}${job.message ? ": " + job.message : ""}`, job.state === "failed");
}

function connectEvents() {
  if (state.events) state.events.close();
  const source = new EventSource(`${base()}/events`);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "frame") {
      if (state.masks.has(event.position)) { // frames not cached are fetched whole when shown
        const objects = state.masks.get(event.position).filter((o) => o.track_id !== event.track_id);
        if (event.object) objects.push(event.object);
        objects.sort((a, b) => a.track_id - b.track_id);
        state.masks.set(event.position, objects);
      }
      showJob({ kind: "propagate", state: "running", done: event.done, total: event.total });
      if (event.position === state.position) draw();
      refreshSoon();
    } else if (event.type === "autolabel_frame") {
      cacheMasks(event.position, event.objects);
      showJob({ kind: "auto-label", state: "running", done: event.done, total: event.total });
      if (event.position === state.position) draw();
    } else if (event.type === "job") {
      showJob(event);
      if (event.state !== "running") {
        if (event.kind === "autolabel") state.masks.clear();
        refreshVideo().then(() => {
          if (state.selected === null && state.video.tracks.length) select(state.video.tracks[0].id);
        });
        refreshTimeline();
        masksAt(state.position).then(draw);
      }
    }
  };
  let opened = false;
  source.onopen = () => {
    // A reconnect may have missed events: start from the server's state again.
    if (opened) {
      state.masks.clear();
      refreshVideo();
      refreshTimeline();
      masksAt(state.position).then(draw);
    }
    opened = true;
  };
  state.events = source;
}

// -- pointer --------------------------------------------------------------------------------------------------
function framePoint(event) {
  const rect = view.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const { scale, x, y } = fit();
  const fx = ((event.clientX - rect.left) * ratio - x) / scale;
  const fy = ((event.clientY - rect.top) * ratio - y) / scale;
  const clamp = (v, hi) => Math.round(Math.min(Math.max(v, 0), hi - 1) * 10) / 10;
  return [clamp(fx, state.video.width), clamp(fy, state.video.height)];
}

view.addEventListener("contextmenu", (event) => event.preventDefault());
view.addEventListener("pointerdown", (event) => {
  if (!state.video) return;
  view.setPointerCapture(event.pointerId);
  const point = framePoint(event);
  if (state.tool === "click") {
    const positive = event.button === 0 && !event.shiftKey && !event.altKey;
    if (!positive && (state.newObject || state.selected === null)) {
      say("a new object starts with a click on it (left button)", true);
      return;
    }
    promptEdit("points", { points: [point], labels: [positive ? 1 : 0] });
    return;
  }
  state.drag = { kind: state.tool, start: point, points: [point] };
});
view.addEventListener("pointermove", (event) => {
  if (!state.drag) return;
  state.drag.points.push(framePoint(event));
  draw();
});
view.addEventListener("pointerup", async () => {
  const drag = state.drag;
  state.drag = null;
  if (!drag) return;
  if (drag.kind === "box") {
    const [x0, y0] = drag.start;
    const [x1, y1] = drag.points[drag.points.length - 1];
    if (Math.abs(x1 - x0) < 2 || Math.abs(y1 - y0) < 2) { draw(); say("drag a box around the object", true); return; }
    await promptEdit("box", { box: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)] });
  } else {
    const erase = drag.kind === "eraser";
    if (erase && (state.newObject || state.selected === null)) { draw(); say("the eraser works on a selected object", true); return; }
    await promptEdit("strokes", { strokes: [{ points: drag.points, radius: state.brush, erase }] });
  }
});

timelineCanvas.addEventListener("pointerdown", (event) => {
  if (!state.video) return;
  const seekTo = (e) => {
    const { rect, left, span } = timelineGeometry();
    seek(Math.floor(((e.clientX - rect.left - left) / span) * state.video.frames));
  };
  const { rect, lanes, top, lane } = timelineGeometry();
  const index = Math.floor((event.clientY - rect.top - top) / lane);
  if (index >= 0 && index < lanes.length) select(lanes[index].id);
  seekTo(event);
  timelineCanvas.setPointerCapture(event.pointerId);
  timelineCanvas.onpointermove = (e) => e.buttons && seekTo(e);
});

// -- keyboard -------------------------------------------------------------------------------------------------
const KEYS = [
  ["← / →", "previous / next frame (Shift: 10 frames)", (e) => e.key === "ArrowLeft" || e.key === "ArrowRight",
    (e) => seek(state.position + (e.key === "ArrowLeft" ? -1 : 1) * (e.shiftKey ? 10 : 1))],
  ["Home / End", "first / last frame", (e) => e.key === "Home" || e.key === "End",
    (e) => seek(e.key === "Home" ? 0 : state.video.frames - 1)],
  ["Space", "play / pause", (e) => e.key === " ", () => togglePlay()],
  ["C", "clicks: left on the object, right or Shift+left on the background", (e) => e.key === "c", () => setTool("click")],
  ["X", "box", (e) => e.key === "x", () => setTool("box")],
  ["B", "brush", (e) => e.key === "b", () => setTool("brush")],
  ["E", "eraser", (e) => e.key === "e", () => setTool("eraser")],
  ["[ / ]", "smaller / larger brush", (e) => e.key === "[" || e.key === "]",
    (e) => { state.brush = Math.max(1, Math.round(state.brush * (e.key === "[" ? 0.8 : 1.25))); draw(); }],
  ["N", "new object: the next click, box or stroke starts one", (e) => e.key === "n",
    () => { state.newObject = true; draw(); say("new object: click on it, drag a box, or paint it"); }],
  ["1 – 9, Tab", "select an object", (e) => /^[1-9]$/.test(e.key) || e.key === "Tab", (e) => {
    const tracks = state.video.tracks;
    if (!tracks.length) return;
    if (e.key === "Tab") {
      const i = tracks.findIndex((t) => t.id === state.selected);
      select(tracks[(i + (e.shiftKey ? tracks.length - 1 : 1)) % tracks.length].id);
    } else if (tracks[Number(e.key) - 1]) select(tracks[Number(e.key) - 1].id);
  }],
  ["F / R / G", "propagate forward / backward / both ways (Shift: every object)", (e) => ["f", "r", "g"].includes(e.key.toLowerCase()) && !e.ctrlKey && !e.metaKey,
    (e) => propagate({ f: "forward", r: "backward", g: "both" }[e.key.toLowerCase()], e.shiftKey)],
  ["L", "approve / withdraw this frame (Shift+L: approve from the mark K to here)", (e) => e.key.toLowerCase() === "l",
    (e) => toggleLock(e.shiftKey)],
  ["K", "set the mark (start of an approval range)", (e) => e.key === "k", () => { state.mark = state.position; drawTimeline(); say("mark set"); }],
  ["W / Shift+W", "next / previous drift warning", (e) => e.key.toLowerCase() === "w", (e) => jumpWarning(e.shiftKey ? -1 : 1)],
  ["J / Shift+J", "next / previous frame with a prompt", (e) => e.key.toLowerCase() === "j", (e) => jumpPrompt(e.shiftKey ? -1 : 1)],
  ["T", "rename the selected object", (e) => e.key === "t", () => rename()],
  ["M", "merge the selected object into another", (e) => e.key === "m", () => merge()],
  ["Delete", "delete the selected object (Shift: from this frame on)", (e) => e.key === "Delete" || e.key === "Backspace",
    (e) => needsTrack() && edit({ action: "delete", track_id: state.selected, from_here: e.shiftKey })],
  ["Ctrl+Z / Ctrl+Shift+Z", "undo / redo", (e) => (e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z",
    (e) => edit({ action: e.shiftKey ? "redo" : "undo" })],
  ["Ctrl+Y", "redo", (e) => (e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "y", () => edit({ action: "redo" })],
  ["Esc", "cancel the running job, the new object, or close this help", (e) => e.key === "Escape", () => escape()],
  ["?", "this help", (e) => e.key === "?", () => toggleHelp()],
];

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (!state.video) return;
  const combo = event.ctrlKey || event.metaKey || event.altKey;
  if (combo && !/^[zy]$/i.test(event.key)) return; // Ctrl+L, Cmd+C... belong to the browser
  for (const [, , matches, run] of KEYS) {
    if (matches(event)) {
      event.preventDefault();
      run(event);
      return;
    }
  }
});

function setTool(tool) {
  state.tool = tool;
  document.querySelectorAll("#tools [data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  draw();
}

function escape() {
  if (!$("help").hidden) return toggleHelp();
  if (!$("cancel").hidden) return cancelJob();
  state.newObject = false;
  state.drag = null;
  draw();
}

function toggleHelp() {
  $("help").hidden = !$("help").hidden;
}

function jumpWarning(step) {
  const tracks = state.timeline.tracks.filter((t) => state.selected === null || t.id === state.selected);
  const positions = [...new Set(tracks.flatMap((t) => t.warnings.map((w) => w.position)))].sort((a, b) => a - b);
  const next = step > 0 ? positions.find((p) => p > state.position) : positions.reverse().find((p) => p < state.position);
  if (next === undefined) return say("no more warnings that way");
  const found = tracks.flatMap((t) => t.warnings.map((w) => ({ ...w, track: t.id }))).find((w) => w.position === next);
  seek(next);
  say(`#${found.track}: ${found.kind.replace("_", " ")} (${found.detail})`);
}

function jumpPrompt(step) {
  const tracks = state.timeline.tracks.filter((t) => state.selected === null || t.id === state.selected);
  const positions = [...new Set(tracks.flatMap((t) => t.prompts.map((p) => p.position)))].sort((a, b) => a - b);
  const next = step > 0 ? positions.find((p) => p > state.position) : positions.reverse().find((p) => p < state.position);
  if (next !== undefined) seek(next);
}

function rename() {
  if (!needsTrack()) return;
  const current = state.video.tracks.find((t) => t.id === state.selected);
  const label = window.prompt(`Label of object #${state.selected}`, current ? current.label : "");
  if (label) edit({ action: "relabel", track_id: state.selected, label });
}

function merge() {
  if (!needsTrack()) return;
  const into = window.prompt(`Merge object #${state.selected} into object number:`);
  if (into && Number(into)) edit({ action: "merge", track_id: state.selected, into: Number(into) });
}

let playTimer = null;
function togglePlay() {
  state.playing = !state.playing;
  clearInterval(playTimer);
  if (state.playing) {
    const fps = Math.min(state.video.fps || 10, 15);
    playTimer = setInterval(() => {
      if (state.position >= state.video.frames - 1) return togglePlay();
      seek(state.position + 1);
    }, 1000 / fps);
  }
}

// -- wiring ---------------------------------------------------------------------------------------------------
document.querySelectorAll("#tools [data-tool]").forEach((button) => (button.onclick = () => setTool(button.dataset.tool)));
$("new-object").onclick = () => { state.newObject = true; draw(); };
$("lock").onclick = () => toggleLock(false);
$("prop-fwd").onclick = () => propagate("forward");
$("prop-back").onclick = () => propagate("backward");
$("prop-both").onclick = () => propagate("both");
$("undo").onclick = () => edit({ action: "undo" });
$("redo").onclick = () => edit({ action: "redo" });
$("cancel").onclick = () => cancelJob();
$("video").onchange = (event) => openVideo(event.target.value);
$("help-button").onclick = () => toggleHelp();
$("help-close").onclick = () => toggleHelp();
$("autolabel").onsubmit = async (event) => {
  event.preventDefault();
  try {
    const data = await api(`${base()}/autolabel`, { query: $("query").value });
    showJob(data.job);
  } catch (error) {
    say(error.message, true);
  }
};
$("export").onclick = async () => {
  try {
    const data = await api(`${base()}/export`, { format: $("format").value });
    say(`exported ${data.files.length} files to ${data.folder}`);
    const first = data.files.find((f) => !f.endsWith("effort.json")) || data.files[0];
    if (first) {
      const link = document.createElement("a");
      link.href = `${base()}/exports/${first.split("/").map(encodeURIComponent).join("/")}`;
      link.textContent = ` download ${first}`;
      link.download = "";
      $("message").append(link);
    }
  } catch (error) {
    say(error.message, true);
  }
};

const helpTable = $("help-table");
for (const [keys, text] of KEYS) {
  const row = helpTable.insertRow();
  row.insertCell().innerHTML = `<kbd>${keys}</kbd>`;
  row.insertCell().textContent = text;
}

window.addEventListener("resize", layout);
setTool("click");
layout();
loadProject().catch((error) => say(error.message, true));
window.segvlm = { state, seek, edit, propagate }; // for scripted use and tests
