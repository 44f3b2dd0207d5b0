// The page: send the chosen image to /predict and /cam, draw the probabilities as bars and show the heatmap.
"use strict";

const $ = (id) => document.getElementById(id);
let urls = [];

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function detail(response) {
  try { return (await response.json()).detail || response.statusText; } catch { return response.statusText; }
}

function post(path, file) {
  const form = new FormData();
  form.append("file", file);
  return fetch(path, { method: "POST", body: form });
}

function drawBars(probabilities, best) {
  const list = $("bars");
  list.replaceChildren();
  for (const [name, p] of Object.entries(probabilities).sort((a, b) => b[1] - a[1])) {
    const item = document.createElement("li");
    item.className = "bar" + (name === best ? " top" : "");
    item.dataset.class = name;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * p).toFixed(1) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * p).toFixed(1) + "%";
    item.append(label, track, value);
    list.append(item);
  }
}

async function analyse(file) {
  if (!file) return;
  urls.forEach(URL.revokeObjectURL);
  urls = [URL.createObjectURL(file)];
  $("preview").src = urls[0];
  $("heatmap").removeAttribute("src");
  $("bars").replaceChildren();
  $("result").hidden = false;
  status("classifying…");
  const predicted = await post("/predict", file);
  if (!predicted.ok) return status(await detail(predicted), true);
  const result = await predicted.json();
  drawBars(result.probabilities, result.class);
  status(`${result.class} (${(100 * result.probabilities[result.class]).toFixed(1)}%) in ${result.latency_ms} ms;` +
         " computing Grad-CAM…");
  const cam = await post("/cam?class=" + encodeURIComponent(result.class), file);
  if (!cam.ok) return status(`${result.class}; Grad-CAM failed: ${await detail(cam)}`, true);
  urls.push(URL.createObjectURL(await cam.blob()));
  $("heatmap").src = urls[1];
  $("heatmap-caption").textContent = `Grad-CAM for ${cam.headers.get("X-Class")}`;
  status(`${result.class} (${(100 * result.probabilities[result.class]).toFixed(1)}%)`);
}

async function showModel() {
  const r = await fetch("/model");
  if (!r.ok) return ($("model").textContent = await detail(r));
  const m = await r.json();
  const acc = m.metrics && m.metrics.accuracy != null ? `, validation accuracy ${(100 * m.metrics.accuracy).toFixed(1)}%` : "";
  $("model").textContent = `${m.arch} on ${m.input.width}×${m.input.height} px, classes ${m.classes.join(", ")}${acc}`;
}

window.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => analyse(e.target.files[0]).catch((err) => status(String(err), true)));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    analyse(e.dataTransfer.files[0]).catch((err) => status(String(err), true));
  });
  showModel().catch(() => ($("model").textContent = "model information unavailable"));
});
