// The smallest useful scenario, in AssemblyScript: GET $TARGET/hello and
// check the status, as scenarios/hello does in Rust.
//
//   npm install && npm run build
//   fusi-node run build/as_hello.wasm --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080

import { http, check, env, Counter, ABI_VERSION } from "fusi-sdk/assembly/index";

// The ABI this module speaks: the host checks it before anything runs.
export function fusi_abi_version(): i32 {
  return ABI_VERSION;
}

let url = "";
const bytes = new Counter("hello_bytes");

export function init(): void {
  url = env("TARGET", "http://127.0.0.1:8080") + "/hello";
}

export function iteration(): void {
  const res = http.get(url);
  check("status is 200", res.status == 200);
  check("body says hello", res.text() == "hello\n");
  bytes.add(<f64>res.body.byteLength);
}
