// Qwen3-VL grounding answers -> boxes and points in pixels of the original image.
//
// A faithful port of clients/grounding.py (tests/browser/test_grounding_port.py runs both on the same texts and
// compares): every JSON object in the text that carries "bbox_2d" [x1, y1, x2, y2] or "point_2d" [x, y], in order,
// wherever it sits (fences, lists, prose around, a list cut short by the token limit); coordinates are relative on a
// 0-1000 scale and become x / 1000 * width pixels, clamped to the image and rounded half to even as Python's round().
// To agree with Python's json module this file carries its own small JSON reader: Python accepts NaN and Infinity,
// keeps integers apart from floats (a label 7 reads "7", 7.0 reads "7.0"), and refuses integers of more than 4300
// digits. Never throws on model text.

export const SCALE = 1000;

const MAX_DEPTH = 500; // Python gives up near its recursion limit (1000 frames); deeper JSON is not a real answer
const MAX_INT_DIGITS = 4300; // Python's int max_str_digits: a longer integer literal fails the whole document
const FAIL = Symbol("not JSON");
const NUMBER = /(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

/** A JSON integer, kept as written (Python ints are exact; their str() is the digits). */
class PyInt {
  constructor(text) {
    this.text = text;
  }
}

function skipSpace(s, i) {
  while (i < s.length && (s[i] === " " || s[i] === "\t" || s[i] === "\n" || s[i] === "\r")) i++;
  return i;
}

function readString(s, i) {
  // i is just past the opening quote
  let out = "";
  for (;;) {
    if (i >= s.length) throw FAIL;
    const c = s[i];
    if (c === '"') return [out, i + 1];
    if (c.charCodeAt(0) <= 0x1f) throw FAIL; // Python's json is strict: no raw control characters
    if (c !== "\\") {
      out += c;
      i++;
      continue;
    }
    const e = s[i + 1];
    if (e === "u") {
      const hex = s.slice(i + 2, i + 6);
      if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw FAIL;
      out += String.fromCharCode(parseInt(hex, 16));
      i += 6;
    } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
      out += ESCAPES[e];
      i += 2;
    } else {
      throw FAIL;
    }
  }
}

function readObject(s, i, depth) {
  const object = new Map();
  i = skipSpace(s, i);
  if (s[i] === "}") return [object, i + 1];
  for (;;) {
    if (s[i] !== '"') throw FAIL;
    let key, value;
    [key, i] = readString(s, i + 1);
    i = skipSpace(s, i);
    if (s[i] !== ":") throw FAIL;
    [value, i] = readValue(s, skipSpace(s, i + 1), depth);
    object.set(key, value);
    i = skipSpace(s, i);
    if (s[i] === "}") return [object, i + 1];
    if (s[i] !== ",") throw FAIL;
    i = skipSpace(s, i + 1);
  }
}

function readArray(s, i, depth) {
  const array = [];
  i = skipSpace(s, i);
  if (s[i] === "]") return [array, i + 1];
  for (;;) {
    let value;
    [value, i] = readValue(s, i, depth);
    array.push(value);
    i = skipSpace(s, i);
    if (s[i] === "]") return [array, i + 1];
    if (s[i] !== ",") throw FAIL;
    i = skipSpace(s, i + 1);
  }
}

/** One JSON value starting exactly at s[i] (as Python's JSONDecoder.raw_decode): [value, index after it]. */
function readValue(s, i, depth = 0) {
  if (depth > MAX_DEPTH) throw FAIL;
  const c = s[i];
  if (c === '"') return readString(s, i + 1);
  if (c === "{") return readObject(s, i + 1, depth + 1);
  if (c === "[") return readArray(s, i + 1, depth + 1);
  for (const [word, value] of [
    ["null", null],
    ["true", true],
    ["false", false],
    ["NaN", NaN],
    ["Infinity", Infinity],
    ["-Infinity", -Infinity],
  ]) {
    if (s.startsWith(word, i)) return [value, i + word.length];
  }
  NUMBER.lastIndex = i;
  const m = NUMBER.exec(s);
  if (m === null) throw FAIL;
  const end = i + m[0].length;
  if (m[2] !== undefined || m[3] !== undefined) return [Number(m[0]), end];
  if (m[1].replace("-", "").length > MAX_INT_DIGITS) throw FAIL;
  return [new PyInt(m[1]), end];
}

/** Python's repr() of a float: shortest round-trip digits, ".0" on integers, exponent form outside 1e-4 .. 1e16. */
function floatRepr(x) {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, exp] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const point = Number(exp) + 1; // x = 0.<digits> * 10^point
  if (point <= -4 || point > 16) {
    const e = Number(exp);
    const shown = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${shown}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${"0".repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** str(value) in Python for a JSON scalar. */
function pyStr(value) {
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return value ? "True" : "False";
  if (value instanceof PyInt) return value.text === "-0" ? "0" : value.text;
  return floatRepr(value);
}

function number(value) {
  let n;
  if (value instanceof PyInt) n = Number(value.text);
  else if (typeof value === "number") n = value;
  else return null; // booleans, strings, null, lists, objects
  return Number.isFinite(n) ? n : null;
}

function coords(value, count) {
  if (!Array.isArray(value) || value.length !== count) return null;
  const numbers = value.map(number);
  return numbers.some((n) => n === null) ? null : numbers;
}

function label(item) {
  const value = item.get("label");
  if (value === undefined || value === null || value instanceof Map || Array.isArray(value)) return null;
  return pyStr(value);
}

/** Python's round(): to the nearest integer, halves to the even neighbour. */
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest < 0.5) return floor;
  if (rest > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** One relative coordinate (0..scale) to pixels of a side of `size` pixels, clamped to [0, size] and rounded. */
export function toPixels(value, size, scale = SCALE) {
  return roundHalfEven(Math.min(Math.max((value / scale) * size, 0), size));
}

function* objects(text) {
  let start = text.indexOf("{");
  while (start !== -1) {
    let value = null;
    let end = start + 1;
    try {
      [value, end] = readValue(text, start);
    } catch (error) {
      if (error !== FAIL) throw error;
    }
    if (value instanceof Map && (value.has("bbox_2d") || value.has("point_2d"))) {
      yield value;
    } else {
      end = start + 1; // look inside: the object may wrap the ones we want
    }
    start = text.indexOf("{", end);
  }
}

function toItem(item, width, height, scale) {
  const name = label(item);
  const box = coords(item.get("bbox_2d"), 4);
  if (box !== null) {
    const [x1, y1, x2, y2] = box;
    const xs = [toPixels(x1, width, scale), toPixels(x2, width, scale)].sort((a, b) => a - b);
    const ys = [toPixels(y1, height, scale), toPixels(y2, height, scale)].sort((a, b) => a - b);
    return { type: "box", label: name, x1: xs[0], y1: ys[0], x2: xs[1], y2: ys[1] };
  }
  const point = coords(item.get("point_2d"), 2);
  if (point !== null) {
    return { type: "point", label: name, x: toPixels(point[0], width, scale), y: toPixels(point[1], height, scale) };
  }
  return null;
}

/**
 * Boxes ({type: "box", label, x1, y1, x2, y2}) and points ({type: "point", label, x, y}) in `text`, in order, in
 * pixels of the original width x height image. Garbage gives [].
 */
export function parseGrounding(text, width, height, scale = SCALE) {
  if (!(width > 0 && height > 0 && scale > 0)) throw new RangeError("width, height and scale must be positive");
  if (typeof text !== "string") return [];
  const found = [];
  for (const item of objects(text)) {
    const parsed = toItem(item, width, height, scale);
    if (parsed !== null) found.push(parsed);
  }
  return found;
}
