// What QuickJS lacks and a module author expects: `console` (to the host's
// captured stdout and stderr) and `TextDecoder` for UTF-8.
import stdout from "wasi:cli/stdout@0.2.12";
import stderr from "wasi:cli/stderr@0.2.12";

function utf8Bytes(text) {
  const binary = unescape(encodeURIComponent(text));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function show(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function writer(open) {
  return (...args) => {
    const stream = open();
    try {
      stream.blockingWriteAndFlush(utf8Bytes(args.map(show).join(" ") + "\n"));
    } finally {
      stream[Symbol.dispose]?.();
    }
  };
}

const out = writer(() => stdout.getStdout());
const err = writer(() => stderr.getStderr());
globalThis.console = { log: out, info: out, debug: out, warn: err, error: err };

// A UTF-8 decoder with TextDecoder's `fatal` and BOM handling.
function slowDecode(bytes, fatal) {
  const parts = [];
  const bad = () => {
    if (fatal) throw new TypeError("The encoded data was not valid UTF-8");
    parts.push("\uFFFD");
  };
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      parts.push(String.fromCharCode(b));
      i++;
      continue;
    }
    let n, cp, min;
    if (b >= 0xc2 && b <= 0xdf) [n, cp, min] = [1, b & 0x1f, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [n, cp, min] = [2, b & 0x0f, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [n, cp, min] = [3, b & 0x07, 0x10000];
    else {
      bad();
      i++;
      continue;
    }
    let j = 1;
    for (; j <= n; j++) {
      const c = bytes[i + j];
      if (c === undefined || (c & 0xc0) !== 0x80) break;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (j <= n || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      bad();
      i += j;
      continue;
    }
    parts.push(String.fromCodePoint(cp));
    i += n + 1;
  }
  return parts.join("");
}

globalThis.TextDecoder = class TextDecoder {
  constructor(label = "utf-8", options = {}) {
    if (!/^utf-?8$/i.test(label)) throw new RangeError(`only UTF-8 is supported, not ${label}`);
    this.fatal = Boolean(options.fatal);
    this.ignoreBOM = Boolean(options.ignoreBOM);
  }
  decode(bytes = new Uint8Array()) {
    let text;
    try {
      let latin1 = "";
      for (let i = 0; i < bytes.length; i += 0x8000) {
        latin1 += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      text = decodeURIComponent(escape(latin1));
    } catch {
      text = slowDecode(bytes, this.fatal);
    }
    return !this.ignoreBOM && text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  }
};
