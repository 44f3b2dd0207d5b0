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

const LABELS = { ok: "like the training scans", uncertain: "uncertain",
                 out_of_distribution: "not like the scans this model learnt from" };

// The gate's decision first, in words: below the gate the bars are the model's numbers, not an answer.
function showVerdict(result) {
  const box = $("verdict");
  box.hidden = false;
  box.className = "verdict " + result.status;
  box.dataset.status = result.status;
  $("verdict-status").textContent = result.answered ? `Answer: ${result.class}` : `No answer: ${LABELS[result.status]}`;
  $("verdict-reason").textContent = result.reason;
  $("bars").classList.toggle("not-answer", !result.answered);
  $("bars-title").textContent = result.answered ? "Class probabilities"
    : "Class probabilities (not an answer: the image did not pass the check)";
}

async function analyse(file) {
  if (!file) return;
  urls.forEach(URL.revokeObjectURL);
  urls = [URL.createObjectURL(file)];
  $("preview").src = urls[0];
  $("heatmap").removeAttribute("src");
  $("bars").replaceChildren();
  $("verdict").hidden = true;
  $("result").hidden = false;
  status("classifying…");
  const predicted = await post("/predict", file);
  if (!predicted.ok) return status(await detail(predicted), true);
  const result = await predicted.json();
  showVerdict(result);
  drawBars(result.probabilities, result.class);
  // Below the gate the heatmap still shows where the model looked, for its most probable class, marked.
  const top = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1])[0][0];
  const said = result.answered ? `${result.class} (${(100 * result.probabilities[result.class]).toFixed(1)}%)`
    : `no answer: ${LABELS[result.status]}`;
  status(`${said} in ${result.latency_ms} ms; computing Grad-CAM…`);
  const cam = await post("/cam?class=" + encodeURIComponent(result.answered ? result.class : top), file);
  if (cam.status === 501) return status(`${said}; no Grad-CAM here: ${await detail(cam)}`);
  if (!cam.ok) return status(`${said}; Grad-CAM failed: ${await detail(cam)}`, true);
  urls.push(URL.createObjectURL(await cam.blob()));
  $("heatmap").src = urls[1];
  $("heatmap-caption").textContent = `Grad-CAM for ${cam.headers.get("X-Class")}` +
    (result.answered ? "" : " (where the model looked; not an answer)");
  status(said);
}

async function showModel() {
  const r = await fetch("/model");
  if (!r.ok) return ($("model").textContent = await detail(r));
  const m = await r.json();
  const acc = m.metrics && m.metrics.accuracy != null ? `, validation accuracy ${(100 * m.metrics.accuracy).toFixed(1)}%` : "";
  const gate = m.decision && m.decision.has_gate ? "out-of-distribution gate on"
    : "no out-of-distribution gate (older run): images are not checked";
  $("model").textContent = `${m.arch} on ${m.input.width}×${m.input.height} px, classes ${m.classes.join(", ")}${acc}; ` +
    `${gate}; runs on ${m.runtime}`;
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
