// The page of `fer-lightning serve`: photos (drop, paste, choose) and the webcam, sent to
// /api/predict; boxes drawn over the image and a probability-bar panel per face.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], liveTta: "model", photo: null, webcam: null, frames: 0 };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModels() {
  const answer = await fetch("/api/models").then((response) => response.json());
  state.models = answer.models;
  state.liveTta = answer.live_tta;
  for (const model of answer.models) {
    $("model").add(new Option(model.name, model.name, false, model.name === answer.default));
  }
  fillTta();
}

function fillTta() {
  const model = state.models.find((m) => m.name === $("model").value);
  $("tta").replaceChildren(
    ...model.tta_options.map((mode) =>
      new Option(mode === "model" ? `model's own (${model.tta})` : mode, mode)),
  );
  $("tta").value = state.webcam ? state.liveTta : "model";
}

// POST an image (a File for photos: multipart; a JPEG Blob for webcam frames: the raw body)
async function predict(image) {
  const query = new URLSearchParams({ model: $("model").value, tta: $("tta").value });
  let body = image;
  const init = { method: "POST" };
  if (image instanceof File) {
    body = new FormData();
    body.append("file", image);
  } else {
    init.headers = { "Content-Type": image.type };
  }
  const response = await fetch(`/api/predict?${query}`, { ...init, body });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer.faces;
}

// boxes over the image (positioned in % of its pixel size) and one bar panel per face
function render(faces, width, height) {
  const boxes = faces.map((face, index) => {
    const [x, y, w, h] = face.box;
    const box = document.createElement("div");
    box.className = "box";
    box.dataset.box = face.box.join(",");
    Object.assign(box.style, {
      left: `${(100 * x) / width}%`, top: `${(100 * y) / height}%`,
      width: `${(100 * w) / width}%`, height: `${(100 * h) / height}%`,
    });
    const tag = document.createElement("span");
    tag.textContent = `${index + 1} ${face.label} ${face.probabilities[face.label].toFixed(2)}`;
    box.append(tag);
    return box;
  });
  $("boxes").replaceChildren(...boxes);
  $("faces").replaceChildren(...faces.map((face, index) => {
    const panel = document.createElement("div");
    panel.className = "face";
    panel.dataset.box = face.box.join(",");
    const title = document.createElement("h2");
    title.textContent = `Face ${index + 1}: ${face.label}`;
    panel.append(title);
    for (const [name, p] of Object.entries(face.probabilities)) {
      const bar = document.createElement("div");
      bar.className = name === face.label ? "bar top" : "bar";
      bar.dataset.label = name;
      bar.dataset.probability = String(p);
      bar.innerHTML = '<span></span><div class="track"><div class="fill"></div></div><output></output>';
      bar.querySelector("span").textContent = name;
      bar.querySelector(".fill").style.width = `${100 * p}%`;
      bar.querySelector("output").textContent = `${(100 * p).toFixed(1)}%`;
      panel.append(bar);
    }
    return panel;
  }));
}

function clearResults() {
  $("boxes").replaceChildren();
  $("faces").replaceChildren();
}

// ------------------------------------------------------------------------------------ photos

async function showPhoto(file) {
  if (!file) return;
  state.photo = file;
  stopWebcam();
  const img = $("photo");
  img.hidden = false;
  $("video").hidden = true;
  $("stage").hidden = false;
  URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  await analysePhoto();
}

async function analysePhoto() {
  if (!state.photo || state.webcam) return;
  clearResults();
  setStatus("Analysing…");
  document.body.dataset.busy = "true";
  try {
    const started = performance.now();
    const faces = await predict(state.photo);
    const img = $("photo");
    await img.decode().catch(() => {});
    render(faces, img.naturalWidth, img.naturalHeight);
    const noun = faces.length === 1 ? "face" : "faces";
    setStatus(`${faces.length} ${noun} · ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    document.body.dataset.busy = "false";
  }
}

// ------------------------------------------------------------------------------------ webcam

async function startWebcam() {
  if (state.webcam) return;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (error) {
    setStatus(`No webcam: ${error.message}`, true);
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("photo").hidden = true;
  $("stage").hidden = false;
  clearResults();
  state.webcam = { stream, fps: null, last: null };
  await video.play();
  liveLoop(state.webcam);
}

function stopWebcam() {
  if (!state.webcam) return;
  state.webcam.stream.getTracks().forEach((track) => track.stop());
  state.webcam = null;
  $("video").srcObject = null;
}

// one frame in flight: the next frame is taken once the answer to the previous one has arrived
async function liveLoop(webcam) {
  const video = $("video");
  const canvas = document.createElement("canvas");
  while (state.webcam === webcam) {
    const scale = Math.min(1, 640 / video.videoWidth);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    const frame = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
    try {
      const faces = await predict(frame);
      if (state.webcam !== webcam) break;
      render(faces, canvas.width, canvas.height);
      const now = performance.now();
      if (webcam.last !== null) {
        const current = 1000 / (now - webcam.last);
        webcam.fps = webcam.fps === null ? current : 0.9 * webcam.fps + 0.1 * current;
        setStatus(`${webcam.fps.toFixed(1)} frames/s · ${faces.length} face(s)`);
      }
      webcam.last = now;
      state.frames += 1;
      document.body.dataset.frames = String(state.frames);
    } catch (error) {
      setStatus(error.message, true);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

// ------------------------------------------------------------------------------------ wiring

function setMode(webcam) {
  $("photo-mode").classList.toggle("active", !webcam);
  $("webcam-mode").classList.toggle("active", webcam);
  $("drop").hidden = webcam;
  // the webcam starts with the server's live_tta (fast frames), photos with the model's own TTA
  $("tta").value = webcam ? state.liveTta : "model";
  if (webcam) startWebcam();
  else {
    stopWebcam();
    $("video").hidden = true;
    $("stage").hidden = !state.photo;
    $("photo").hidden = false;
    if (state.photo) analysePhoto();
  }
}

function firstImage(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" && item.getAsFile();
    if (file) return file;
  }
  return null;
}

window.addEventListener("DOMContentLoaded", async () => {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => showPhoto(event.target.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    showPhoto(firstImage(event.dataTransfer.files));
  });
  document.addEventListener("paste", (event) => showPhoto(firstImage(event.clipboardData.items)));
  $("photo-mode").addEventListener("click", () => setMode(false));
  $("webcam-mode").addEventListener("click", () => setMode(true));
  $("model").addEventListener("change", () => {
    fillTta();
    analysePhoto();
  });
  $("tta").addEventListener("change", analysePhoto);
  try {
    await loadModels();
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus(`Cannot reach the server: ${error.message}`, true);
  }
});
