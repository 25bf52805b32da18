// fusi-sdk for AssemblyScript: the scenario ABI (docs/scenario-abi.md) in a
// TypeScript-like language, for scenarios written as k6 users write theirs.
//
// A scenario is an AssemblyScript entry file that exports `iteration` (and
// optionally `setup`, `init`, `teardown`) and re-exports this SDK's
// `fusi_abi_version`:
//
//   import { http, check, sleep, env } from "fusi-sdk";
//   export { fusi_abi_version } from "fusi-sdk";
//
//   export function iteration(): void {
//     const res = http.get(env("TARGET", "http://127.0.0.1:8080") + "/hello");
//     check("status is 200", res.status == 200);
//     sleep(0.5);
//   }
//
// Build it with the asconfig.json that `fusi-node new NAME --lang
// assemblyscript` writes: it replaces AssemblyScript's `abort` (and
// `seed`, for Math.random) with this SDK's, since a fusi module may import
// nothing but `fusi` and `wasi_snapshot_preview1`.

// ---- The host functions (import module `fusi`) ----

@external("fusi", "http_request")
declare function host_http_request(req: usize, reqLen: i32, buf: usize, bufLen: i32): i32;
@external("fusi", "result_read")
declare function host_result_read(ptr: usize, len: i32): i32;
@external("fusi", "sleep_ms")
declare function host_sleep_ms(ms: i64): void;
@external("fusi", "check")
declare function host_check(name: usize, len: i32, passed: i32): void;
@external("fusi", "group_enter")
declare function host_group_enter(name: usize, len: i32): void;
@external("fusi", "group_exit")
declare function host_group_exit(): void;
@external("fusi", "tag_set")
declare function host_tag_set(key: usize, keyLen: i32, value: usize, valueLen: i32): void;
@external("fusi", "tag_remove")
declare function host_tag_remove(key: usize, keyLen: i32): void;
@external("fusi", "metric_add")
declare function host_metric_add(kind: i32, name: usize, len: i32, value: f64): void;
@external("fusi", "vu_id")
declare function host_vu_id(): i64;
@external("fusi", "iteration_number")
declare function host_iteration_number(): i64;
@external("fusi", "env_get")
declare function host_env_get(key: usize, len: i32): i32;
@external("fusi", "log")
declare function host_log(level: i32, ptr: usize, len: i32): void;
@external("fusi", "expected_statuses")
declare function host_expected_statuses(ptr: usize, len: i32): void;
@external("fusi", "cookies_clear")
declare function host_cookies_clear(): void;
@external("fusi", "cookie_get")
declare function host_cookie_get(url: usize, urlLen: i32, name: usize, nameLen: i32): i32;
@external("fusi", "data_len")
declare function host_data_len(name: usize, len: i32): i64;
@external("fusi", "data_row")
declare function host_data_row(name: usize, len: i32, index: i64): i32;
@external("fusi", "data_next")
declare function host_data_next(name: usize, len: i32): i64;
@external("fusi", "setup_data_set")
declare function host_setup_data_set(ptr: usize, len: i32): void;
@external("fusi", "setup_data_get")
declare function host_setup_data_get(): i32;
@external("fusi", "ws_connect")
declare function host_ws_connect(req: usize, len: i32): i32;
@external("fusi", "ws_send")
declare function host_ws_send(handle: i32, kind: i32, data: usize, len: i32): i32;
@external("fusi", "ws_recv")
declare function host_ws_recv(handle: i32, timeoutMs: i64): i32;
@external("fusi", "ws_close")
declare function host_ws_close(handle: i32, code: i32): void;

/**
 * The scenario ABI this SDK speaks: 4. Requests carry options, so that
 * the VU's cookie jar and redirects apply (3), and test data, setup data
 * and WebSockets are there (4) (docs/scenario-abi.md).
 */
export const ABI_VERSION: i32 = 4;

/** Re-export this from the scenario's entry file: the host checks it. */
export function fusi_abi_version(): i32 {
  return ABI_VERSION;
}

// ---- Text and bytes ----

function utf8(s: string): ArrayBuffer {
  return String.UTF8.encode(s);
}

function ptr(b: ArrayBuffer): usize {
  return changetype<usize>(b);
}

/** The host's result buffer, `n` bytes of it, as a new buffer. */
function readResult(n: i32): ArrayBuffer {
  const out = new ArrayBuffer(n);
  host_result_read(ptr(out), n);
  return out;
}

/** At most `max` bytes of the host's result buffer, as many as it holds. */
function readResultUpTo(max: i32): ArrayBuffer {
  const out = new ArrayBuffer(max);
  const got = host_result_read(ptr(out), max);
  return out.slice(0, got < 0 ? 0 : got);
}

// ---- Logging, env, identity ----

/** Log levels of `log`. */
export enum Level {
  Error = 0,
  Warn = 1,
  Info = 2,
  Debug = 3,
}

/** Writes a line to the node's log, with the VU id. */
export function log(message: string, level: Level = Level.Info): void {
  const b = utf8(message);
  host_log(level, ptr(b), b.byteLength);
}

/** A run parameter (`--env KEY=VALUE`), or `fallback` when it is not set. */
export function env(key: string, fallback: string = ""): string {
  const k = utf8(key);
  const n = host_env_get(ptr(k), k.byteLength);
  if (n < 0) return fallback;
  return String.UTF8.decode(readResult(n));
}

/** This VU's id: 1, 2, ... unique within the run; 0 in setup and teardown. */
export function vuId(): i64 {
  return host_vu_id();
}

/** How many iterations this VU finished before this one. */
export function iterationNumber(): i64 {
  return host_iteration_number();
}

/** Pauses this VU for `seconds` (as k6's `sleep`); other VUs go on. */
export function sleep(seconds: f64): void {
  host_sleep_ms(<i64>Math.round(seconds * 1000.0));
}

// ---- Test data and setup data ----

/**
 * Test data: the files the run ships with the scenario
 * (`fusi-node run --data users=users.csv`). A row is JSON text: a CSV row
 * is an object of strings keyed by the header (read a column with
 * `data.field`).
 */
export namespace data {
  /** How many rows the set `name` has; -1 when the run ships no such set. */
  export function len(name: string): i64 {
    const n = utf8(name);
    return host_data_len(ptr(n), n.byteLength);
  }

  /** Row `index` (from 0) of the set `name`, as JSON; null when there is no such set or row. */
  export function row(name: string, index: i64): string | null {
    const n = utf8(name);
    const got = host_data_row(ptr(n), n.byteLength, index);
    if (got < 0) return null;
    return String.UTF8.decode(readResult(got));
  }

  /**
   * The next row of the set `name` for this node, as JSON: every row in
   * turn (`--data-mode shared`), or only rows no other node draws
   * (`--data-mode unique`). Null when there is no such set or this node's
   * rows ran out (with `--data-exhausted stop`, no iteration starts on this
   * node after this one).
   */
  export function next(name: string): string | null {
    const n = utf8(name);
    const index = host_data_next(ptr(n), n.byteLength);
    if (index < 0) return null;
    return row(name, index);
  }

  /** The row for this VU: row `(vuId - 1) % len`. */
  export function forVu(name: string): string | null {
    const n = len(name);
    if (n <= 0) return null;
    return row(name, (host_vu_id() - 1) % n);
  }

  /** The row for this VU's iteration: row `iterationNumber % len`. */
  export function forIteration(name: string): string | null {
    const n = len(name);
    if (n <= 0) return null;
    return row(name, host_iteration_number() % n);
  }

  /**
   * The text of the field `key` of a flat JSON object of strings (a CSV
   * row, as `row` and `next` give it); null when it has none.
   */
  export function field(row: string, key: string): string | null {
    const needle = JSON_QUOTE + escapeJson(key) + JSON_QUOTE + ":" + JSON_QUOTE;
    const at = row.indexOf(needle);
    if (at < 0) return null;
    let out = "";
    let i = at + needle.length;
    while (i < row.length) {
      const c = row.charAt(i);
      if (c == JSON_QUOTE) return out;
      if (c == "\\" && i + 1 < row.length) {
        const e = row.charAt(i + 1);
        if (e == "n") out += "\n";
        else if (e == "t") out += "\t";
        else if (e == "r") out += "\r";
        else if (e == "u" && i + 5 < row.length) {
          out += String.fromCharCode(<i32>parseInt(row.substr(i + 2, 4), 16));
          i += 4;
        } else out += e;
        i += 2;
        continue;
      }
      out += c;
      i += 1;
    }
    return null;
  }
}

const JSON_QUOTE = "\"";

function escapeJson(s: string): string {
  return s.replaceAll("\\", "\\\\").replaceAll(JSON_QUOTE, "\\\"");
}

/**
 * Hands `value` from `setup` to every VU's `iteration` and `teardown`, on
 * every node (at most 256 KiB; JSON text is the usual choice). On a mesh,
 * `setup` runs once, where the run was submitted. Call it in `setup` only.
 */
export function setSetupData(value: string): void {
  const b = utf8(value);
  host_setup_data_set(ptr(b), b.byteLength);
}

/** What `setup` handed on with `setSetupData`; null when it handed on nothing. */
export function setupData(): string | null {
  const n = host_setup_data_get();
  if (n < 0) return null;
  return String.UTF8.decode(readResult(n));
}

// ---- Checks, groups, tags ----

/** Records a check (k6's `check`) and returns `passed`. */
export function check(name: string, passed: bool): bool {
  const b = utf8(name);
  host_check(ptr(b), b.byteLength, passed ? 1 : 0);
  return passed;
}

/**
 * Runs `body` inside a group (k6's `group`): its time and checks count
 * under it. `body` is a function or a lambda that captures no local
 * variable (AssemblyScript has no closures); keep what it needs in globals.
 */
export function group(name: string, body: () => void): void {
  const b = utf8(name);
  host_group_enter(ptr(b), b.byteLength);
  body();
  host_group_exit();
}

/** Sets a tag on this VU's samples from now on. */
export function setTag(key: string, value: string): void {
  const k = utf8(key);
  const v = utf8(value);
  host_tag_set(ptr(k), k.byteLength, ptr(v), v.byteLength);
}

/** Removes a tag `setTag` set. */
export function removeTag(key: string): void {
  const k = utf8(key);
  host_tag_remove(ptr(k), k.byteLength);
}

// ---- Custom metrics ----

function addSample(kind: i32, name: string, value: f64): void {
  const b = utf8(name);
  host_metric_add(kind, ptr(b), b.byteLength, value);
}

/** A sum (k6's Counter). */
export class Counter {
  constructor(public name: string) {}
  add(value: f64): void {
    addSample(0, this.name, value);
  }
}

/** A distribution with percentiles (k6's Trend). */
export class Trend {
  constructor(public name: string) {}
  add(value: f64): void {
    addSample(1, this.name, value);
  }
}

/** The share of non-zero samples (k6's Rate). */
export class Rate {
  constructor(public name: string) {}
  add(value: bool): void {
    addSample(2, this.name, value ? 1.0 : 0.0);
  }
}

/** The lowest, highest and last value (k6's Gauge). */
export class Gauge {
  constructor(public name: string) {}
  add(value: f64): void {
    addSample(3, this.name, value);
  }
}

// ---- HTTP ----

/** Why no response arrived (the host's error kinds). */
export const ERROR_KINDS: string[] = [
  "", "dns", "refused", "timeout", "reset", "tls", "connect", "invalid_request", "protocol",
  "too_many_redirects",
];

/** Where a request's time went, in milliseconds (k6's `timings`). */
export class Timings {
  dns: f64 = 0;
  connecting: f64 = 0;
  tlsHandshaking: f64 = 0;
  sending: f64 = 0;
  waiting: f64 = 0;
  receiving: f64 = 0;
  duration: f64 = 0;
  total: f64 = 0;
}

/** A response, or the error that stood in for one (`status` 0). */
export class Response {
  status: i32 = 0;
  /** "HTTP/1.1", "HTTP/2", or "" when no response arrived. */
  protocol: string = "";
  /** The error kind ("refused", "timeout", ...), or "" when a response arrived. */
  error: string = "";
  /** What the error says, or "". */
  errorMessage: string = "";
  /** Header names (lower case) and values, in order. */
  headers: string[][] = [];
  body: ArrayBuffer = new ArrayBuffer(0);
  timings: Timings = new Timings();
  /** The URL of the last request made, after redirects ("" if the host did not say). */
  url: string = "";

  /** The first value of header `name` (case-insensitive), or null. */
  header(name: string): string | null {
    const lower = name.toLowerCase();
    for (let i = 0; i < this.headers.length; i++) {
      if (this.headers[i][0] == lower) return this.headers[i][1];
    }
    return null;
  }

  /** The body as UTF-8 text. */
  text(): string {
    return String.UTF8.decode(this.body);
  }

  /** Whether a response arrived with a status in 200-399, as the Rust SDK's `ok`. */
  ok(): bool {
    return this.status >= 200 && this.status < 400;
  }
}

/** Builds the request bytes of the ABI (little-endian, length-prefixed). */
class Writer {
  buf: Uint8Array = new Uint8Array(256);
  len: i32 = 0;

  private room(n: i32): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }

  u32(v: u32): void {
    this.room(4);
    store<u32>(this.buf.dataStart + <usize>this.len, v);
    this.len += 4;
  }

  u64(v: u64): void {
    this.room(8);
    store<u64>(this.buf.dataStart + <usize>this.len, v);
    this.len += 8;
  }

  bytes(b: ArrayBuffer): void {
    this.u32(<u32>b.byteLength);
    this.room(b.byteLength);
    memory.copy(this.buf.dataStart + <usize>this.len, changetype<usize>(b), <usize>b.byteLength);
    this.len += b.byteLength;
  }

  pairs(list: string[][]): void {
    this.u32(<u32>list.length);
    for (let i = 0; i < list.length; i++) {
      this.bytes(utf8(list[i][0]));
      this.bytes(utf8(list[i][1]));
    }
  }
}

/** Reads the response bytes of the ABI. */
class Reader {
  at: usize;
  end: usize;
  constructor(public start: usize, len: i32) {
    this.at = start;
    this.end = start + <usize>len;
  }
  u8(): u8 {
    const v = load<u8>(this.at);
    this.at += 1;
    return v;
  }
  u16(): u16 {
    const v = load<u16>(this.at);
    this.at += 2;
    return v;
  }
  u32(): u32 {
    const v = load<u32>(this.at);
    this.at += 4;
    return v;
  }
  u64(): u64 {
    const v = load<u64>(this.at);
    this.at += 8;
    return v;
  }
  bytes(): ArrayBuffer {
    const n = this.u32();
    const out = new ArrayBuffer(<i32>n);
    memory.copy(changetype<usize>(out), this.at, <usize>n);
    this.at += <usize>n;
    return out;
  }
  text(): string {
    return String.UTF8.decode(this.bytes());
  }
}

/** The response space handed to the host: most responses fit at once. */
const SCRATCH: ArrayBuffer = new ArrayBuffer(16 * 1024);

function decode(start: usize, len: i32): Response {
  const r = new Reader(start, len);
  const res = new Response();
  res.status = <i32>r.u16();
  const protocol = r.u8();
  res.protocol = protocol == 1 ? "HTTP/1.1" : protocol == 2 ? "HTTP/2" : "";
  const kind = <i32>r.u8();
  res.error = kind < ERROR_KINDS.length ? ERROR_KINDS[kind] : "unknown";
  const t = res.timings;
  t.dns = <f64>r.u64() / 1000.0;
  t.connecting = <f64>r.u64() / 1000.0;
  t.tlsHandshaking = <f64>r.u64() / 1000.0;
  t.sending = <f64>r.u64() / 1000.0;
  t.waiting = <f64>r.u64() / 1000.0;
  t.receiving = <f64>r.u64() / 1000.0;
  t.duration = <f64>r.u64() / 1000.0;
  t.total = <f64>r.u64() / 1000.0;
  res.errorMessage = r.text();
  const count = r.u32();
  for (let i: u32 = 0; i < count; i++) {
    const name = r.text();
    const value = r.text();
    res.headers.push([name, value]);
  }
  res.body = r.bytes();
  // ABI 3: extras follow the body (a key this SDK does not know is skipped).
  if (r.at < r.end) {
    const extras = r.u32();
    for (let i: u32 = 0; i < extras; i++) {
      const key = r.text();
      const value = r.text();
      if (key == "url") res.url = value;
    }
  }
  return res;
}

const HEX = "0123456789ABCDEF";

/** application/x-www-form-urlencoded, as the Rust SDK encodes it. */
function formEncode(fields: string[][]): string {
  let out = "";
  for (let i = 0; i < fields.length; i++) {
    if (i > 0) out += "&";
    out += component(fields[i][0]) + "=" + component(fields[i][1]);
  }
  return out;
}

function component(text: string): string {
  const bytes = Uint8Array.wrap(utf8(text));
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    const plain = (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) ||
      b == 0x2a || b == 0x2d || b == 0x2e || b == 0x5f;
    if (plain) out += String.fromCharCode(b);
    else if (b == 0x20) out += "+";
    else out += "%" + HEX.charAt(b >> 4) + HEX.charAt(b & 15);
  }
  return out;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Standard base64 with padding. */
function base64(text: string): string {
  const b = Uint8Array.wrap(utf8(text));
  let out = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = (<u32>b[i] << 16) | (i + 1 < b.length ? <u32>b[i + 1] << 8 : 0) | (i + 2 < b.length ? <u32>b[i + 2] : 0);
    out += B64.charAt((n >> 18) & 63) + B64.charAt((n >> 12) & 63);
    out += i + 1 < b.length ? B64.charAt((n >> 6) & 63) : "=";
    out += i + 2 < b.length ? B64.charAt(n & 63) : "=";
  }
  return out;
}

/** An HTTP request to build, then `send` (k6's `http.request`). */
export class Request {
  headers: string[][] = [];
  tags: string[][] = [];
  body: ArrayBuffer = new ArrayBuffer(0);
  /** Milliseconds; -1 for the host's default (60 s). */
  timeoutMs: i64 = -1;
  /** The most redirects followed; -1 for the host's default (10, as k6). */
  maxRedirectsN: i32 = -1;
  /** Whether the host hands the body over (it reads and counts it anyway). */
  keepBody: bool = true;

  constructor(public method: string, public url: string) {}

  header(name: string, value: string): Request {
    this.headers.push([name, value]);
    return this;
  }

  /** Tags this request's samples; a `name` tag replaces the URL in them. */
  tag(key: string, value: string): Request {
    this.tags.push([key, value]);
    return this;
  }

  /** A text body. */
  text(body: string): Request {
    this.body = utf8(body);
    return this;
  }

  /** A JSON body (already serialized) with its content type. */
  json(body: string): Request {
    this.body = utf8(body);
    return this.header("content-type", "application/json");
  }

  timeout(seconds: f64): Request {
    this.timeoutMs = <i64>Math.round(seconds * 1000.0);
    return this;
  }

  /** An application/x-www-form-urlencoded body of [name, value] pairs. */
  form(fields: string[][]): Request {
    this.body = utf8(formEncode(fields));
    return this.header("content-type", "application/x-www-form-urlencoded");
  }

  /** `authorization: Basic ...`. */
  basicAuth(user: string, password: string): Request {
    return this.header("authorization", "Basic " + base64(user + ":" + password));
  }

  /** `authorization: Bearer TOKEN`. */
  bearer(token: string): Request {
    return this.header("authorization", "Bearer " + token);
  }

  /** Follows at most `n` redirects (default 10, at most 100); 0 returns the redirect itself. */
  maxRedirects(n: i32): Request {
    this.maxRedirectsN = n < 0 ? 0 : n > 100 ? 100 : n;
    return this;
  }

  /** The host reads and counts the body but hands none of it over: faster. */
  discardBody(): Request {
    this.keepBody = false;
    return this;
  }

  /**
   * Opens a WebSocket to this request's `ws://` or `wss://` URL, with its
   * headers, tags and timeout (the connect's); null when it could not
   * connect (`ws.lastError()` says why).
   */
  websocket(): WebSocket | null {
    const w = this.encode();
    const handle = host_ws_connect(w.buf.dataStart, w.len);
    if (handle < 0) {
      lastWsError = wsError(handle);
      return null;
    }
    lastWsError = "";
    return new WebSocket(handle);
  }

  /** Sends it and waits for the response; a network error comes back as status 0. */
  send(): Response {
    const w = this.encode();
    const n = host_http_request(w.buf.dataStart, w.len, ptr(SCRATCH), SCRATCH.byteLength);
    if (n <= SCRATCH.byteLength) return decode(ptr(SCRATCH), n);
    const all = readResult(n);
    return decode(ptr(all), n);
  }

  private encode(): Writer {
    const w = new Writer();
    w.bytes(utf8(this.method));
    w.bytes(utf8(this.url));
    w.u64(this.timeoutMs < 0 ? u64.MAX_VALUE : <u64>this.timeoutMs);
    w.pairs(this.headers);
    w.pairs(this.tags);
    w.bytes(this.body);
    const options: string[][] = [];
    if (this.maxRedirectsN >= 0) options.push(["redirects", this.maxRedirectsN.toString()]);
    if (!this.keepBody) options.push(["body", "discard"]);
    w.pairs(options);
    return w;
  }
}

// ---- WebSockets ----

let lastWsError = "";

/** Why a WebSocket call returned nothing, from its negative code. */
function wsError(code: i32): string {
  if (code == -1) return "timeout";
  if (code == -2) {
    const raw = readResultUpTo(1026);
    if (raw.byteLength < 2) return "closed";
    const at = ptr(raw);
    const closeCode = (<i32>load<u8>(at) << 8) | <i32>load<u8>(at + 1);
    return "closed (" + closeCode.toString() + " " + String.UTF8.decode(raw.slice(2)) + ")";
  }
  const raw = readResultUpTo(1025);
  if (raw.byteLength < 1) return "failed";
  return "failed: " + String.UTF8.decode(raw.slice(1));
}

/** A message a WebSocket received. */
export class WsMessage {
  constructor(public binary: bool, public data: ArrayBuffer) {}

  /** The message as UTF-8 text. */
  text(): string {
    return String.UTF8.decode(this.data);
  }
}

/**
 * An open WebSocket (`ws.connect`). A socket the iteration leaves open is
 * closed by the host when the iteration ends. Every call sets `error`:
 * empty after a success, else `timeout`, `closed (CODE REASON)` or
 * `failed: MESSAGE`.
 */
export class WebSocket {
  error: string = "";

  constructor(private handle: i32) {}

  /** Sends one text message; false when it could not (see `error`). */
  sendText(text: string): bool {
    return this.sendKind(0, utf8(text));
  }

  /** Sends one binary message; false when it could not (see `error`). */
  sendBinary(data: ArrayBuffer): bool {
    return this.sendKind(1, data);
  }

  private sendKind(kind: i32, data: ArrayBuffer): bool {
    const code = host_ws_send(this.handle, kind, ptr(data), data.byteLength);
    this.error = code < 0 ? wsError(code) : "";
    return code >= 0;
  }

  /** The next message, waiting up to `timeoutSeconds`; null on a timeout or a closed socket (see `error`). */
  recv(timeoutSeconds: f64): WsMessage | null {
    const n = host_ws_recv(this.handle, <i64>Math.round(timeoutSeconds * 1000.0));
    if (n < 0) {
      this.error = wsError(n);
      return null;
    }
    this.error = "";
    const raw = readResult(n);
    if (n == 0) return new WsMessage(true, raw);
    return new WsMessage(load<u8>(ptr(raw)) == 1, raw.slice(1));
  }

  /** Closes it with `code` (1000: a normal close). */
  close(code: i32 = 1000): void {
    host_ws_close(this.handle, code);
  }
}

/** WebSockets, as k6's `ws` module, with k6's `ws_*` metrics. */
export namespace ws {
  /** Opens a WebSocket to `url`; null when it could not (`ws.lastError()` says why). */
  export function connect(url: string): WebSocket | null {
    return new Request("GET", url).websocket();
  }

  /** Why the last connect failed; empty after one that worked. */
  export function lastError(): string {
    return lastWsError;
  }
}

/** The HTTP verbs, as k6's `http` module. */
export namespace http {
  export function get(url: string): Response {
    return new Request("GET", url).send();
  }
  export function del(url: string): Response {
    return new Request("DELETE", url).send();
  }
  export function post(url: string, body: string): Response {
    return new Request("POST", url).text(body).send();
  }
  export function put(url: string, body: string): Response {
    return new Request("PUT", url).text(body).send();
  }
  /** Empties this VU's cookie jar (it is kept across iterations, as k6's). */
  export function clearCookies(): void {
    host_cookies_clear();
  }

  /** The value of the cookie `name` the jar would send to `url`, or null. */
  export function cookie(url: string, name: string): string | null {
    const u = utf8(url);
    const n = utf8(name);
    const len = host_cookie_get(ptr(u), u.byteLength, ptr(n), n.byteLength);
    if (len < 0) return null;
    return String.UTF8.decode(readResult(len));
  }

  /** The statuses this VU's requests expect from now on ("200-299,404"); "" for the run's. */
  export function setExpectedStatuses(statuses: string): void {
    const b = utf8(statuses);
    host_expected_statuses(ptr(b), b.byteLength);
  }
}

// ---- What AssemblyScript itself needs of the host ----

/**
 * AssemblyScript's `abort` (a failed assertion, an out-of-range index, an
 * explicit `abort()`): the message goes to the host as the scenario's
 * panic message (log level 4), then the iteration fails with reason
 * `panic`. asconfig.json points `abort` here.
 */
export function fusiAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  // The host says "the scenario " before it, as before a Rust panic's
  // "panicked at ...".
  let text = "aborted";
  if (file !== null) text += " at " + file + ":" + line.toString() + ":" + column.toString();
  if (message !== null) text += ": " + message;
  const b = utf8(text);
  host_log(4, ptr(b), b.byteLength);
  unreachable();
}

let seedCounter: f64 = 0;

/**
 * AssemblyScript's `seed` for Math.random: different per VU and per call,
 * not unpredictable (no scenario needs secrets from it).
 */
export function fusiSeed(): f64 {
  seedCounter += 1;
  return <f64>host_vu_id() * 1000003.0 + <f64>host_iteration_number() * 7919.0 + seedCounter;
}
