// AtomThink Serve page: posts /solve with stream: true and draws the search tree from its Server-Sent Events.
"use strict";

const EXAMPLE_QUESTION = "How much taller is bar B than bar C?";
const SVG_NS = "http://www.w3.org/2000/svg";
const ROW_H = 24;
const PAD = 24;
const LABEL_W = 150; // room for the deepest nodes' labels
let colW = 200; // recomputed so the deepest level fits the panel

const $ = (id) => document.getElementById(id);

const state = {
  image: null, // data URL
  nodes: new Map(), // id -> {id, parent, text, depth, final, invalid, score, confidence, weight, children: []}
  roots: [],
  kept: new Set(),
  live: null, // Set of ids still alive after the last selection (null before any)
  bestPath: [],
  stopped: new Set(), // nodes where a confidence rule stopped their path (DeepConf online)
  particles: new Map(), // id -> particles on the node after the last resampling (particle filtering)
  heads: new Map(), // id -> subtree index of the node each DVTS subtree keeps
  threshold: null, // DeepConf online's stop threshold
  controller: null,
  started: 0,
};

function setStatus(status, text) {
  document.body.dataset.status = status;
  $("status").textContent = text;
}

function resetTree() {
  state.nodes = new Map();
  state.roots = [];
  state.kept = new Set();
  state.live = null;
  state.bestPath = [];
  state.stopped = new Set();
  state.particles = new Map();
  state.heads = new Map();
  state.threshold = null;
  $("answer").textContent = "-";
  $("steps").replaceChildren();
  $("timings").replaceChildren();
  $("node-detail").textContent = "Click a node to read its step.";
  render();
}

// ---- image input ------------------------------------------------------------------------------------------
function showImage(dataUrl) {
  state.image = dataUrl;
  const preview = $("preview");
  preview.hidden = !dataUrl;
  $("drop-hint").hidden = Boolean(dataUrl);
  if (dataUrl) preview.src = dataUrl;
  else preview.removeAttribute("src");
}

function readFile(file) {
  if (!file || !file.type.startsWith("image/")) return;
  const reader = new FileReader();
  reader.onload = () => showImage(reader.result);
  reader.readAsDataURL(file);
}

async function useExample() {
  const response = await fetch("/static/example.png");
  const blob = await response.blob();
  readFile(new File([blob], "example.png", { type: "image/png" }));
  $("question").value = EXAMPLE_QUESTION;
}

// ---- request ----------------------------------------------------------------------------------------------
function numberField(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

const WIDTH_STRATEGIES = new Set(["beam", "dvts"]); // strategies that take beam_width

// The strategy menu lists what the server's registry serves (the enum of /solve's `strategy` in its OpenAPI schema).
async function loadStrategies() {
  const response = await fetch("/openapi.json");
  if (!response.ok) return;
  const spec = await response.json();
  const names = strategyNames(spec);
  if (!names.length) return;
  const select = $("strategy");
  const current = select.value;
  select.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    }),
  );
  select.value = names.includes(current) ? current : names[0];
}

function strategyNames(spec) {
  const schemas = (spec.components && spec.components.schemas) || {};
  const found = new Set();
  const visit = (schema) => {
    if (!schema || typeof schema !== "object") return;
    if (schema.$ref) return visit(schemas[schema.$ref.split("/").pop()]);
    if (Array.isArray(schema.enum)) schema.enum.forEach((v) => typeof v === "string" && found.add(v));
    for (const key of ["anyOf", "oneOf", "allOf"]) (schema[key] || []).forEach(visit);
  };
  for (const schema of Object.values(schemas)) visit((schema.properties || {}).strategy); // /solve's request models
  return [...found];
}

function requestBody() {
  const mode = $("mode").value;
  const body = { question: $("question").value.trim(), mode, stream: true, max_steps: numberField("max-steps") };
  if (state.image) body.image = state.image;
  if (mode === "slow") {
    body.strategy = $("strategy").value;
    body.candidates = numberField("candidates");
    if (WIDTH_STRATEGIES.has(body.strategy)) body.beam_width = numberField("beam-width");
  }
  body.temperature = numberField("temperature");
  body.seed = numberField("seed");
  return body;
}

async function solve(event) {
  event.preventDefault();
  if (state.controller) return;
  resetTree();
  state.controller = new AbortController();
  state.started = performance.now();
  $("submit").disabled = true;
  $("stop").disabled = false;
  setStatus("running", "Searching...");
  try {
    const response = await fetch("/solve", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(requestBody()),
      signal: state.controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({ error: { message: response.statusText } }));
      showError(body);
      return;
    }
    await readEvents(response.body);
    if (document.body.dataset.status === "running") setStatus("error", "The stream ended without a result.");
  } catch (error) {
    if (error.name === "AbortError") setStatus("idle", "Stopped: the search was cancelled.");
    else setStatus("error", `Request failed: ${error.message}`);
  } finally {
    state.controller = null;
    $("submit").disabled = false;
    $("stop").disabled = true;
  }
}

async function readEvents(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block);
    }
  }
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // keep-alive comment
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (name === "expansion") onExpansion(payload);
  else if (name === "scoring") onScoring(payload);
  else if (name === "selection") onSelection(payload);
  else if (name === "confidence") onConfidence(payload);
  else if (name === "particles") onParticles(payload);
  else if (name === "subtrees") onSubtrees(payload);
  else if (name === "result") onResult(payload);
  else if (name === "error") showError(payload);
}

// ---- events -----------------------------------------------------------------------------------------------
function onExpansion(event) {
  for (const node of event.nodes) {
    const entry = { ...node, score: null, confidence: null, weight: null, children: [] };
    state.nodes.set(node.id, entry);
    if (node.parent === null) state.roots.push(entry);
    else state.nodes.get(node.parent).children.push(entry);
  }
  render();
}

function onScoring(event) {
  for (const { id, score } of event.scores) state.nodes.get(id).score = score;
  render();
}

function ancestors(id) {
  const path = [];
  for (let node = state.nodes.get(id); node; node = state.nodes.get(node.parent)) path.push(node.id);
  return path;
}

function onSelection(event) {
  state.kept = new Set(event.kept);
  state.bestPath = event.best_path;
  state.live = new Set(event.kept.flatMap(ancestors));
  render();
}

// DeepConf and self-certainty: each new step's confidence; the paths a low confidence stopped.
function onConfidence(event) {
  for (const { id, confidence, self_certainty } of event.nodes) {
    const node = state.nodes.get(id);
    if (node) Object.assign(node, { confidence, selfCertainty: self_certainty });
  }
  for (const id of event.stopped) state.stopped.add(id);
  if (event.threshold !== null && event.threshold !== undefined) state.threshold = event.threshold;
  render();
}

// Particle filtering: each particle's resampling probability, and how many particles each node carries now.
function onParticles(event) {
  for (const { id, weight } of event.weights) {
    const node = state.nodes.get(id);
    if (node) node.weight = weight;
  }
  state.particles = new Map();
  for (const id of event.drawn) state.particles.set(id, (state.particles.get(id) || 0) + 1);
  render();
}

// DVTS: the node each subtree keeps.
function onSubtrees(event) {
  state.heads = new Map();
  event.heads.forEach((id, index) => id !== null && state.heads.set(id, index));
  render();
}

function onResult(result) {
  $("answer").textContent = result.answer ?? "(none)";
  const steps = $("steps");
  steps.replaceChildren();
  for (const step of result.steps) {
    const item = document.createElement("li");
    item.textContent = step.text;
    if (step.score !== null) {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = step.score.toFixed(3);
      item.append(score);
    }
    steps.append(item);
  }
  const t = result.timings_ms;
  const s = result.stats;
  const rows = [
    ["total", `${t.total.toFixed(0)} ms`],
    ["policy busy", `${t.policy.toFixed(0)} ms`],
    ["PRM busy", `${t.prm.toFixed(0)} ms`],
    ["queue wait (sum)", `${t.queue.toFixed(0)} ms`],
    ["policy / PRM calls", `${s.policy_calls} / ${s.prm_calls}`],
    ["generated tokens", `${s.generated_tokens}`],
    ["expanded nodes", `${s.expanded_nodes}`],
  ];
  if (result.truncated) rows.push(["truncated", "deadline reached"]);
  $("timings").replaceChildren(
    ...rows.map(([label, value]) => {
      const row = document.createElement("tr");
      for (const text of [label, value]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }),
  );
  const mode = result.strategy ? `${result.mode} / ${result.strategy}` : result.mode;
  setStatus("done", `Done (${mode}): ${s.expanded_nodes} nodes in ${(t.total / 1000).toFixed(2)} s.`);
  render();
}

function showError(body) {
  const error = body.error || {};
  const field = error.field ? ` (${error.field})` : "";
  setStatus("error", `Error ${error.code || ""}${field}: ${error.message || "unknown error"}`);
}

// ---- drawing ----------------------------------------------------------------------------------------------
function confidenceColor(confidence) {
  // token confidence (minus the mean top-k log-probability): about 1 (flat) to 10 and more (certain)
  const hue = Math.round(120 * Math.max(0, Math.min(1, (confidence - 1) / 6)));
  return `hsl(${hue}, 45%, 55%)`;
}

function scoreColor(score) {
  const hue = Math.round(120 * Math.max(0, Math.min(1, score)));
  return `hsl(${hue}, 70%, ${hue > 90 ? 38 : 45}%)`;
}

function layout() {
  // Leaves get consecutive rows in depth-first order; a parent sits at the middle of its children.
  const positions = new Map();
  let row = 0;
  const place = (node) => {
    if (!node.children.length) {
      positions.set(node.id, { x: PAD + (node.depth - 1) * colW, y: PAD + row * ROW_H });
      row += 1;
    } else {
      node.children.forEach(place);
      const ys = node.children.map((child) => positions.get(child.id).y);
      positions.set(node.id, { x: PAD + (node.depth - 1) * colW, y: (Math.min(...ys) + Math.max(...ys)) / 2 });
    }
  };
  state.roots.forEach(place);
  return { positions, rows: row };
}

function svg(tag, attributes) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function render() {
  const maxDepth = Math.max(1, ...[...state.nodes.values()].map((n) => n.depth));
  const room = $("tree").clientWidth - PAD * 2 - LABEL_W;
  colW = Math.max(110, Math.min(200, room / Math.max(1, maxDepth - 1)));
  const labelChars = Math.floor((colW - 14) / 6.2);
  const { positions, rows } = layout();
  const chosen = new Set(state.bestPath);
  const root = $("tree-svg");
  root.setAttribute("width", PAD * 2 + (maxDepth - 1) * colW + LABEL_W);
  root.setAttribute("height", Math.max(120, PAD * 2 + rows * ROW_H));
  const edges = svg("g", {});
  const dots = svg("g", {});
  const deepestKept = Math.max(0, ...[...state.kept].map((id) => state.nodes.get(id)?.depth ?? 0));
  for (const node of state.nodes.values()) {
    const at = positions.get(node.id);
    if (node.parent !== null) {
      const from = positions.get(node.parent);
      const midX = (from.x + at.x) / 2;
      const edge = svg("path", { d: `M${from.x},${from.y} C${midX},${from.y} ${midX},${at.y} ${at.x},${at.y}` });
      edge.setAttribute("class", chosen.has(node.id) && chosen.has(node.parent) ? "edge chosen" : "edge");
      edges.append(edge);
    }
    const pruned = state.live !== null && node.depth <= deepestKept && !state.live.has(node.id);
    const classes = ["node"];
    if (node.score === null && node.confidence === null) classes.push("unscored");
    const alive = state.live !== null && state.live.has(node.id);
    const stopped = state.stopped.has(node.id);
    if ((node.invalid && !alive) || pruned || stopped) classes.push("dim"); // an invalid step kept is not dimmed
    if (stopped) classes.push("stopped");
    if (chosen.has(node.id)) classes.push("chosen");
    if (node.final) classes.push("final");
    const group = svg("g", { class: classes.join(" "), "data-id": node.id, transform: `translate(${at.x},${at.y})` });
    const circle = svg("circle", { r: 7 });
    if (node.score !== null) circle.setAttribute("fill", scoreColor(node.score));
    else if (node.confidence !== null) circle.setAttribute("fill", confidenceColor(node.confidence));
    const title = svg("title", {});
    const why = node.invalid
      ? ` [rejected: ${node.invalid}]`
      : stopped
        ? ` [stopped: confidence below ${state.threshold?.toFixed(3)}]`
        : pruned
          ? " [pruned]"
          : "";
    const facts = [node.score === null ? "not scored" : `PRM ${node.score.toFixed(3)}`];
    if (node.confidence !== null) {
      facts.push(`confidence ${node.confidence.toFixed(3)}`, `self-certainty ${node.selfCertainty.toFixed(3)}`);
    }
    if (node.weight !== null) facts.push(`particle weight ${node.weight.toFixed(3)}`);
    if (state.particles.has(node.id)) facts.push(`${state.particles.get(node.id)} particle(s) here`);
    if (state.heads.has(node.id)) facts.push(`kept by subtree ${state.heads.get(node.id) + 1}`);
    title.textContent = `#${node.id} ${node.text} (${facts.join(", ")})${why}`;
    const short = node.text.length > labelChars ? `${node.text.slice(0, labelChars - 1)}…` : node.text;
    const label = svg("text", { x: 11, y: 4 });
    label.textContent = short;
    group.append(circle, title, label);
    const badge = node.score !== null ? node.score.toFixed(2) : node.confidence !== null ? node.confidence.toFixed(1) : null;
    if (badge !== null) {
      const value = svg("text", { class: "score", x: -9, y: -9 });
      value.textContent = state.particles.has(node.id) ? `${badge} ×${state.particles.get(node.id)}` : badge;
      group.append(value);
    }
    group.addEventListener("click", () => {
      $("node-detail").textContent = title.textContent;
    });
    dots.append(group);
  }
  root.replaceChildren(edges, dots);
  const scored = [...state.nodes.values()].filter((n) => n.score !== null).length;
  const stopped = state.stopped.size ? `, ${state.stopped.size} stopped` : "";
  $("counts").textContent = state.nodes.size ? `${state.nodes.size} nodes, ${scored} scored${stopped}` : "";
}

// ---- wiring -----------------------------------------------------------------------------------------------
function init() {
  $("question").value = EXAMPLE_QUESTION;
  $("solve-form").addEventListener("submit", solve);
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("use-example").addEventListener("click", () => useExample().catch((e) => setStatus("error", e.message)));
  $("clear-image").addEventListener("click", () => showImage(null));
  $("image-file").addEventListener("change", (e) => readFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    readFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) readFile(item.getAsFile());
  });
  const toggle = () => {
    const slow = $("mode").value === "slow";
    for (const id of ["strategy", "candidates", "beam-width"]) $(id).disabled = !slow;
    if (slow && !WIDTH_STRATEGIES.has($("strategy").value)) $("beam-width").disabled = true;
  };
  $("mode").addEventListener("change", toggle);
  $("strategy").addEventListener("change", toggle);
  toggle();
  render();
  loadStrategies()
    .then(toggle)
    .catch(() => {}); // the static menu stays when the schema cannot be read
}

init();
