// The playground page: a multi-turn chat with images and videos against this server's own public API.
//
// - Files are read in the browser into data: URLs and sent inside the request, as any client would; previews use
//   blob: URLs. Nothing is sent anywhere but /v1/* on this origin (the page's CSP enforces it: connect-src 'self').
// - The API key lives in memory; "keep for this tab" puts it in sessionStorage (gone with the tab). Never
//   localStorage, never cookies.
// - Grounding: an answer's boxes and points refer to the last image of the user turn that asked; if that turn has no
//   image, to the last image of the nearest earlier user turn that has one.

import { ApiError, listModels, parseServerTiming, streamChat } from "./api.js";
import { parseGrounding } from "./grounding.js";

const KEY_STORAGE = "qwen3vl-playground-key";
const $ = (id) => document.getElementById(id);

const state = {
  key: "",
  attachments: [], // {kind, source: "file"|"url", name, url, preview, width, height}
  history: [], // {message (as sent to the API), images: [{url, preview, name, width, height}]}
  conversation: 0, // bumped by "New chat": a request still running then no longer touches the history
  controller: null,
};

// --- small DOM helpers -----------------------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function setStatus(text, kind = "info") {
  const status = $("status");
  status.textContent = text;
  status.dataset.kind = kind;
}

function scrollToEnd() {
  const conversation = $("conversation");
  conversation.scrollTop = conversation.scrollHeight;
}

/** An <input type=number>'s value, or undefined when empty. */
function numberIn(input) {
  const value = input.valueAsNumber;
  return Number.isFinite(value) ? value : undefined;
}

// --- API key ---------------------------------------------------------------------------------------------------------

function initKey() {
  const input = $("api-key");
  const remember = $("remember-key");
  const stored = sessionStorage.getItem(KEY_STORAGE);
  if (stored) {
    state.key = stored;
    input.value = stored;
    remember.checked = true;
  }
  const save = () => {
    state.key = input.value.trim();
    if (remember.checked && state.key) sessionStorage.setItem(KEY_STORAGE, state.key);
    else sessionStorage.removeItem(KEY_STORAGE);
  };
  input.addEventListener("input", save);
  input.addEventListener("change", loadModels);
  remember.addEventListener("change", save);
}

// --- models ----------------------------------------------------------------------------------------------------------

let modelRetry = null;

async function loadModels() {
  clearTimeout(modelRetry);
  try {
    const ids = await listModels(state.key);
    $("model-list").replaceChildren(...ids.map((id) => el("option", { value: id })));
    if (!$("model").value && ids.length) $("model").value = ids[0];
    setStatus(ids.length ? `Ready: ${ids.join(", ")}` : "The server lists no model", ids.length ? "ok" : "error");
  } catch (error) {
    if (error.status === 401) setStatus("This server needs an API key: type it above.", "warn");
    else if (error.status === 503) {
      setStatus("The model is loading…", "warn");
      modelRetry = setTimeout(loadModels, 2000);
    } else setStatus(`Cannot list models: ${error.message}`, "error");
  }
}

// --- attachments -----------------------------------------------------------------------------------------------------

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function imageSize(url) {
  const image = new Image();
  image.src = url;
  try {
    await image.decode();
    return { width: image.naturalWidth, height: image.naturalHeight };
  } catch {
    return { width: 0, height: 0 }; // a format this browser cannot show: sent anyway, the server decides
  }
}

async function addFiles(files) {
  for (const file of files) {
    const kind = file.type.startsWith("video/") ? "video" : file.type.startsWith("image/") ? "image" : null;
    if (kind === null) {
      setStatus(`${file.name}: not an image or a video`, "warn");
      continue;
    }
    const preview = URL.createObjectURL(file);
    const size = kind === "image" ? await imageSize(preview) : { width: 0, height: 0 };
    const url = await readAsDataURL(file);
    state.attachments.push({ kind, source: "file", name: file.name, url, preview, ...size });
  }
  renderAttachments();
}

function addUrl() {
  const input = $("media-url");
  const url = input.value.trim();
  if (!/^(https?|data):/i.test(url)) {
    setStatus("A media URL starts with http://, https:// or data:", "warn");
    return;
  }
  const kind = $("media-url-kind").value;
  // The page does not load other origins (CSP): a URL item has no preview, the server fetches it.
  state.attachments.push({ kind, source: "url", name: url, url, preview: null, width: 0, height: 0 });
  input.value = "";
  renderAttachments();
}

function numberField(label, name, attrs) {
  return el("label", { class: "field mini" }, label, el("input", { type: "number", name, ...attrs }));
}

function thumbnail(item) {
  if (item.preview === null) return el("span", { class: "thumb url", title: item.url }, item.kind);
  if (item.kind === "video") {
    return el("video", { class: "thumb", src: item.preview, muted: true, preload: "metadata" });
  }
  return el("img", { class: "thumb", src: item.preview, alt: item.name });
}

function renderAttachments() {
  const list = $("attachments");
  list.replaceChildren(
    ...state.attachments.map((item, index) => {
      const controls =
        item.kind === "image"
          ? [numberField("max_pixels", "max_pixels", { min: 1, step: 1, placeholder: "default" })]
          : [
              numberField("fps", "fps", { min: 0.1, step: 0.1, placeholder: "2" }),
              numberField("max_frames", "max_frames", { min: 2, step: 1, placeholder: "default" }),
              numberField("max_pixels", "max_pixels", { min: 1, step: 1, placeholder: "default" }),
            ];
      const size = item.width ? ` · ${item.width}×${item.height}` : "";
      const remove = el("button", { type: "button", class: "remove", title: "Remove", ariaLabel: "Remove" }, "×");
      remove.addEventListener("click", () => {
        const [gone] = state.attachments.splice(index, 1);
        if (gone.preview) URL.revokeObjectURL(gone.preview);
        renderAttachments();
      });
      const row = el(
        "li",
        { class: `attachment ${item.kind}`, dataset: { index } },
        thumbnail(item),
        el("div", { class: "about" }, el("span", { class: "name" }, `${item.kind}: ${item.name}${size}`), ...controls),
        remove,
      );
      // keep what was typed into the controls on the item itself
      for (const input of row.querySelectorAll("input")) {
        if (item[input.name] !== undefined) input.value = item[input.name];
        input.addEventListener("input", () => {
          item[input.name] = numberIn(input);
        });
      }
      return row;
    }),
  );
}

function toPart(item) {
  const controls = item.kind === "image" ? ["max_pixels"] : ["fps", "max_frames", "max_pixels"];
  const media = { url: item.url };
  for (const name of controls) if (item[name] !== undefined) media[name] = item[name];
  return item.kind === "image" ? { type: "image_url", image_url: media } : { type: "video_url", video_url: media };
}

// --- the conversation ------------------------------------------------------------------------------------------------

function renderUser(text, items) {
  const media = items.length ? el("div", { class: "media" }, ...items.map(thumbnail)) : null;
  const view = el("article", { class: "message user" }, media, text ? el("div", { class: "text" }, text) : null);
  $("empty-hint").hidden = true;
  $("conversation").append(view);
  scrollToEnd();
  return view;
}

function answerView() {
  const reasoningText = el("div", { class: "reasoning-text" });
  const reasoning = el("details", { class: "reasoning", hidden: true }, el("summary", {}, "reasoning"), reasoningText);
  const text = el("div", { class: "text" });
  const grounding = el("figure", { class: "grounding", hidden: true });
  const error = el("div", { class: "error", role: "alert", hidden: true });
  const usage = el("span", { class: "usage" });
  const timing = el("span", { class: "timing" });
  const finish = el("span", { class: "finish" });
  const meta = el("footer", { class: "meta" }, usage, timing, finish);
  const view = el("article", { class: "message assistant", dataset: { state: "waiting" } });
  view.append(reasoning, text, grounding, error, meta);
  $("conversation").append(view);
  scrollToEnd();
  return { view, reasoning, reasoningText, text, grounding, error, usage, timing, finish, drawn: "[]" };
}

function showError(answer, error) {
  const status = error.status ? `HTTP ${error.status}` : "";
  answer.error.replaceChildren(
    el("strong", { class: "code" }, error.code ?? error.name ?? "error"),
    " ",
    el("span", { class: "message-text" }, error.message),
    error.param ? el("span", { class: "param" }, ` (param: ${error.param})`) : null,
    status ? el("span", { class: "http" }, ` · ${status}`) : null,
    error.requestId ? el("span", { class: "request-id" }, ` · request ${error.requestId}`) : null,
  );
  answer.error.hidden = false;
}

function showUsage(answer, usage) {
  const details = usage.prompt_tokens_details ?? {};
  const visual = [];
  if (details.image_tokens) visual.push(`${details.image_tokens} image`);
  if (details.video_tokens) visual.push(`${details.video_tokens} video`);
  const prompt = `prompt ${usage.prompt_tokens}${visual.length ? ` (${visual.join(", ")})` : ""}`;
  answer.usage.textContent = `${prompt} · completion ${usage.completion_tokens} · total ${usage.total_tokens} tokens`;
}

function showTiming(answer, header, firstTokenMs, totalMs) {
  const stages = parseServerTiming(header)
    .filter((m) => m.dur !== null)
    .map((m) => `${m.name} ${m.dur.toFixed(1)} ms`);
  const client = [];
  if (firstTokenMs !== null) client.push(`first token ${firstTokenMs.toFixed(0)} ms`);
  if (totalMs !== null) client.push(`total ${totalMs.toFixed(0)} ms`);
  answer.timing.replaceChildren(
    stages.length ? el("span", { class: "server-timing" }, `server: ${stages.join(" · ")}`) : null,
    client.length ? el("span", { class: "client-timing" }, `browser: ${client.join(" · ")}`) : null,
  );
}

// --- grounding -------------------------------------------------------------------------------------------------------

/** The image an answer's coordinates refer to (see the rule at the top), or null. */
function groundingImage(history) {
  for (let i = history.length - 1; i >= 0; i--) {
    const entry = history[i];
    if (entry.message.role === "user" && entry.images.length) return entry.images[entry.images.length - 1];
  }
  return null;
}

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#0f9fa8", "#c2185b", "#6b8e23"];

function percent(value, size) {
  return `${(value / size) * 100}%`;
}

function drawGrounding(answer, text, image) {
  if (!/bbox_2d|point_2d/.test(text)) return;
  const shown = image !== null && image.width > 0 && image.preview !== null; // a file image this page can show
  const items = shown ? parseGrounding(text, image.width, image.height) : parseGrounding(text, 1000, 1000);
  const key = JSON.stringify(items);
  if (key === answer.drawn) return; // nothing new since the last delta: keep the figure as it is
  answer.drawn = key;
  const figure = answer.grounding;
  figure.hidden = items.length === 0;
  if (!shown) {
    // a URL image (the page does not load other origins) or none at all: list the 0-1000 coordinates
    const listed = items.map((g) =>
      g.type === "box"
        ? `${g.label ?? "box"} [${g.x1}, ${g.y1}, ${g.x2}, ${g.y2}]`
        : `${g.label ?? "point"} [${g.x}, ${g.y}]`,
    );
    const where = image === null ? "no image in the conversation" : `${image.name}, not shown here`;
    figure.replaceChildren(el("figcaption", {}, `Coordinates (0–1000) on ${where}: ${listed.join("; ")}`));
    return;
  }
  const overlay = el("div", { class: "overlay" });
  items.forEach((g, index) => {
    const color = COLORS[index % COLORS.length];
    const tag = el("span", { class: "tag" }, g.label ?? (g.type === "box" ? "box" : "point"));
    tag.style.backgroundColor = color;
    let mark;
    if (g.type === "box") {
      mark = el("div", { class: "box", dataset: { x1: g.x1, y1: g.y1, x2: g.x2, y2: g.y2 } }, tag);
      if (g.y1 < image.height * 0.06) tag.classList.add("inside"); // no room above the box: label inside it
      mark.style.left = percent(g.x1, image.width);
      mark.style.top = percent(g.y1, image.height);
      mark.style.width = percent(g.x2 - g.x1, image.width);
      mark.style.height = percent(g.y2 - g.y1, image.height);
    } else {
      mark = el("div", { class: "point", dataset: { x: g.x, y: g.y } }, el("span", { class: "dot" }), tag);
      mark.style.left = percent(g.x, image.width);
      mark.style.top = percent(g.y, image.height);
      mark.querySelector(".dot").style.backgroundColor = color;
    }
    mark.style.borderColor = color;
    overlay.append(mark);
  });
  const picture = el("img", { src: image.preview, alt: image.name, width: image.width, height: image.height });
  const boxes = items.filter((g) => g.type === "box").length;
  const points = items.length - boxes;
  const counts = `${boxes} box${boxes === 1 ? "" : "es"}, ${points} point${points === 1 ? "" : "s"}`;
  const caption = `${counts} on ${image.name} (${image.width}×${image.height})`;
  figure.replaceChildren(el("div", { class: "stage" }, picture, overlay), el("figcaption", {}, caption));
}

// --- sending ---------------------------------------------------------------------------------------------------------

function sampling() {
  const body = {};
  for (const name of ["max_tokens", "temperature", "top_p", "top_k", "seed"]) {
    const value = numberIn($(name));
    if (value !== undefined) body[name] = value;
  }
  return body;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

function restoreComposer(text, items) {
  // a turn that did not make it into the conversation goes back to the composer, ready to retry
  if (!$("prompt").value) $("prompt").value = text;
  if (!state.attachments.length) {
    state.attachments = items;
    renderAttachments();
  }
}

async function send() {
  if (state.controller !== null) return;
  const text = $("prompt").value.trim();
  const items = state.attachments;
  const model = $("model").value.trim();
  if (!text && !items.length) {
    setStatus("Type a question or attach an image or a video first.", "warn");
    $("prompt").focus();
    return;
  }
  if (!model) {
    setStatus("No model: type the model id above.", "warn");
    return;
  }
  const content = items.length ? [...items.map(toPart), ...(text ? [{ type: "text", text }] : [])] : text;
  const images = items
    .filter((item) => item.kind === "image")
    .map(({ url, preview, name, width, height }) => ({ url, preview, name, width, height }));
  const userView = renderUser(text, items);
  const entry = { message: { role: "user", content }, images };
  state.history.push(entry);
  state.attachments = [];
  renderAttachments();
  $("prompt").value = "";

  const system = $("system").value.trim();
  const body = {
    model,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...state.history.map((e) => e.message)],
    stream: true,
    stream_options: { include_usage: true },
    ...sampling(),
  };
  const answer = answerView();
  const image = groundingImage(state.history);
  const conversation = state.conversation;
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const started = performance.now();
  let firstToken = null;
  let serverTiming = null;
  let answerText = "";
  let reasoning = "";
  let outcome = "done";
  try {
    await streamChat({
      body,
      key: state.key,
      signal: controller.signal,
      onOpen(response) {
        serverTiming = response.headers.get("server-timing");
        answer.view.dataset.state = "streaming";
        showTiming(answer, serverTiming, null, null);
      },
      onChunk(chunk) {
        if (chunk.usage) showUsage(answer, chunk.usage);
        const choice = (chunk.choices ?? []).find((c) => c.index === 0);
        if (!choice) return;
        const delta = choice.delta ?? {};
        if ((delta.content || delta.reasoning_content) && firstToken === null) {
          firstToken = performance.now() - started;
        }
        if (delta.reasoning_content) {
          reasoning += delta.reasoning_content;
          answer.reasoningText.textContent = reasoning;
          answer.reasoning.hidden = false;
        }
        if (delta.content) {
          answerText += delta.content;
          answer.text.textContent = answerText;
          drawGrounding(answer, answerText, image);
          scrollToEnd();
        }
        if (choice.finish_reason) answer.finish.textContent = `finish: ${choice.finish_reason}`;
      },
    });
  } catch (error) {
    if (error.name === "AbortError") {
      outcome = "stopped";
      answer.finish.textContent = "stopped";
    } else {
      outcome = "error";
      const network = { name: "network_error", message: String(error.message ?? error) };
      showError(answer, error instanceof ApiError ? error : network);
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
  answer.view.dataset.state = outcome;
  showTiming(answer, serverTiming, firstToken, performance.now() - started);
  if (conversation !== state.conversation) return; // "New chat" while this ran: it belongs to no conversation
  if (outcome === "error" || (outcome === "stopped" && !answerText)) {
    // not part of the conversation: the next request will not carry it
    state.history.splice(state.history.indexOf(entry), 1);
    userView.classList.add("dropped");
    userView.title = "Not part of the conversation (no answer)";
    restoreComposer(text, items);
  } else if (answerText) {
    state.history.push({ message: { role: "assistant", content: answerText }, images: [] });
  }
  scrollToEnd();
  const said = { done: "Answered", stopped: "Stopped", error: "The request failed" };
  setStatus(said[outcome], outcome === "error" ? "error" : "ok");
}

function stop() {
  state.controller?.abort();
}

function newChat() {
  stop();
  state.conversation += 1;
  state.history = [];
  $("conversation").replaceChildren($("empty-hint"));
  $("empty-hint").hidden = false;
  setStatus("New conversation", "ok");
}

// --- wiring ----------------------------------------------------------------------------------------------------------

function init() {
  initKey();
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("files").addEventListener("change", async (event) => {
    await addFiles([...event.target.files]);
    event.target.value = "";
  });
  $("add-url").addEventListener("click", addUrl);
  $("media-url").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addUrl();
    }
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files.length) addFiles([...event.dataTransfer.files]);
  });
  $("prompt").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length) addFiles(files);
  });
  loadModels();
}

init();
