// The try-it page: list models, send an image (or a video) and draw the boxes on a canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#ff3838", "#ff9d97", "#ff701f", "#ffb21d", "#cfd231", "#48f90a", "#92cc17", "#3ddb86",
                 "#1a9334", "#00d4bb", "#2c99a8", "#00c2ff"];

function headers() {
  const key = $("apikey").value.trim();
  localStorage.setItem("ailab-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  const body = await response.json();
  if (!response.ok) { status(body.error || response.statusText, true); return; }
  const select = $("model");
  select.innerHTML = "";
  for (const model of body.models) {
    for (const v of model.versions) {
      const option = document.createElement("option");
      option.value = `${model.name}?version=${encodeURIComponent(v.version)}`;
      const aliases = v.aliases.length ? ` @${v.aliases.join(",@")}` : "";
      option.textContent = `${model.name} v${v.version}${aliases} (${model.source})`;
      option.selected = v.version === model.latest;
      select.appendChild(option);
    }
  }
  $("runtime").textContent = `${body.runtime.device} / ${body.runtime.backend}, ${body.models.length} model(s)`;
  if (!body.models.length) status("The model store is empty.", true);
}

function drawBoxes(ctx, detections, scale = 1) {
  ctx.lineWidth = Math.max(2, Math.round(ctx.canvas.width / 400));
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 60))}px sans-serif`;
  for (const d of detections) {
    const [x1, y1, x2, y2] = d.box.map((v) => v * scale);
    const colour = COLOURS[d.class_id % COLOURS.length];
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${d.score.toFixed(2)}`;
    const w = ctx.measureText(label).width + 6;
    const h = parseInt(ctx.font, 10) + 4;
    ctx.fillStyle = colour;
    ctx.fillRect(x1, Math.max(0, y1 - h), w, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 3, Math.max(h - 4, y1 - 4));
  }
}

function fillTable(detections) {
  const body = $("detections").querySelector("tbody");
  body.innerHTML = "";
  for (const d of detections.slice(0, 200)) {
    const row = body.insertRow();
    row.insertCell().textContent = `${d.class_name} (${d.class_id})`;
    row.insertCell().textContent = d.score.toFixed(3);
    row.insertCell().textContent = d.box.map((v) => v.toFixed(1)).join(", ");
  }
}

async function detectImage(file, model, conf) {
  const form = new FormData();
  form.append("file", file);
  form.append("conf", conf);
  const [name, query] = model.split("?");
  const started = performance.now();
  const response = await fetch(`/v1/predict/${encodeURIComponent(name)}?${query}`, {
    method: "POST", body: form, headers: headers(),
  });
  const body = await response.json();
  if (!response.ok) { status(`${response.status}: ${body.error}`, true); return; }
  const image = await createImageBitmap(file);
  const canvas = $("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const result = body.images[0];
  drawBoxes(ctx, result.detections);
  fillTable(result.detections);
  canvas.dataset.detections = String(result.detections.length);
  const ms = Math.round(performance.now() - started);
  status(`${result.detections.length} detection(s) by ${body.model} v${body.version} in ${ms} ms ` +
         `(inference ${result.timings_ms.inference} ms)`);
}

async function detectVideo(file, model, conf, stride) {
  const form = new FormData();
  form.append("file", file);
  form.append("conf", conf);
  form.append("frame_stride", stride);
  const [name, query] = model.split("?");
  const response = await fetch(`/v1/predict/${encodeURIComponent(name)}/video?${query}`, {
    method: "POST", body: form, headers: headers(),
  });
  if (!response.ok) { const b = await response.json(); status(`${response.status}: ${b.error}`, true); return; }
  const video = $("video");
  video.src = URL.createObjectURL(file);
  // Browsers play MP4/WebM but not every container the server reads (AVI): draw boxes anyway.
  const playable = await Promise.race([
    new Promise((resolve) => { video.onloadeddata = () => resolve(true); video.onerror = () => resolve(false); video.load(); }),
    new Promise((resolve) => setTimeout(() => resolve(false), 3000)),
  ]);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let frames = 0;
  let meta = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
      if (line.type === "meta") {
        meta = line;
        canvas.width = line.width;
        canvas.height = line.height;
      } else if (line.type === "frame") {
        frames += 1;
        if (playable && meta && meta.fps) {
          video.currentTime = line.frame / meta.fps;
          await new Promise((resolve) => { video.onseeked = resolve; setTimeout(resolve, 500); });
          ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
        } else {
          ctx.fillStyle = "#333";
          ctx.fillRect(0, 0, canvas.width, canvas.height);
        }
        drawBoxes(ctx, line.detections);
        fillTable(line.detections);
        canvas.dataset.detections = String(line.detections.length);
        status(`frame ${line.frame}: ${line.detections.length} detection(s)`);
      } else if (line.type === "summary") {
        status(`${frames} frame(s) analysed of ${line.frames_read} in ${line.seconds} s`);
      } else if (line.type === "error") {
        status(line.error, true);
      }
    }
  }
  canvas.dataset.frames = String(frames);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  $("run").disabled = true;
  status("working...");
  try {
    if (file.type.startsWith("video/")) {
      await detectVideo(file, $("model").value, $("conf").value, $("stride").value);
    } else {
      await detectImage(file, $("model").value, $("conf").value);
    }
  } catch (error) {
    status(String(error), true);
  } finally {
    $("run").disabled = false;
    document.body.dataset.done = "1";
  }
});

$("apikey").value = localStorage.getItem("ailab-api-key") || "";
loadModels().catch((error) => status(String(error), true));
