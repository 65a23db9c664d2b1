// The server's public API, called exactly as any client would: GET /v1/models, POST /v1/chat/completions (SSE).

/** An OpenAI error object ({"error": {"message", "type", "param", "code"}}) with the HTTP status it came with. */
export class ApiError extends Error {
  constructor(error, status) {
    super(typeof error?.message === "string" ? error.message : "the server sent an error without a message");
    this.name = "ApiError";
    this.status = status;
    this.code = error?.code ?? null;
    this.type = error?.type ?? null;
    this.param = error?.param ?? null;
    this.requestId = error?.request_id ?? null;
  }
}

function headers(key, json = false) {
  const out = {};
  if (json) out["Content-Type"] = "application/json";
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorFrom(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "object") return new ApiError(body.error, response.status);
  } catch {
    // not JSON: fall through
  }
  return new ApiError({ message: text.trim() || response.statusText || "request failed" }, response.status);
}

/** The served model ids. */
export async function listModels(key, signal) {
  const response = await fetch("/v1/models", { headers: headers(key), signal });
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  return (body.data ?? []).map((card) => card.id);
}

/** `Server-Timing: queue;dur=1.2, media;dur=3.4` -> [{name: "queue", dur: 1.2}, ...]. */
export function parseServerTiming(header) {
  if (!header) return [];
  return header
    .split(",")
    .map((entry) => {
      const [name, ...params] = entry.trim().split(";");
      const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
      return { name: name.trim(), dur: dur === undefined ? null : Number(dur.slice(4)) };
    })
    .filter((metric) => metric.name);
}

/**
 * POST a streamed chat completion. `onOpen(response)` is called once the headers are in, `onChunk(chunk)` for every
 * chunk. Resolves at `data: [DONE]`; rejects with an ApiError (before or during the stream), or with the AbortError
 * of `signal`, which also closes the connection (the server then cancels the request).
 */
export async function streamChat({ body, key, signal, onOpen, onChunk }) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(key, true),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  onOpen?.(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new ApiError({ message: "the stream ended before [DONE]", code: "incomplete_stream" }, 0);
      buffer += value.replaceAll("\r\n", "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) !== -1) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") {
          while (!(await reader.read()).done); // the server ends the response right after [DONE]
          return;
        }
        const payload = JSON.parse(data);
        if (payload.error) throw new ApiError(payload.error, 0); // mid-stream: the HTTP status (200) says nothing
        onChunk(payload);
      }
    }
  } catch (error) {
    reader.cancel().catch(() => {}); // let the connection go (after an abort: already gone)
    throw error;
  }
}
