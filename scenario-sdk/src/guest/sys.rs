//! The raw host imports, exactly as docs/scenario-abi.md lists them.

#[link(wasm_import_module = "fusi")]
unsafe extern "C" {
    pub fn http_request(
        req_ptr: *const u8,
        req_len: usize,
        buf_ptr: *mut u8,
        buf_len: usize,
    ) -> i32;
    pub fn result_read(ptr: *mut u8, len: usize) -> i32;
    pub fn sleep_ms(ms: i64);
    pub fn check(name_ptr: *const u8, name_len: usize, passed: i32);
    pub fn group_enter(name_ptr: *const u8, name_len: usize);
    pub fn group_exit();
    pub fn tag_set(key_ptr: *const u8, key_len: usize, value_ptr: *const u8, value_len: usize);
    pub fn tag_remove(key_ptr: *const u8, key_len: usize);
    pub fn metric_add(kind: i32, name_ptr: *const u8, name_len: usize, value: f64);
    pub fn vu_id() -> i64;
    pub fn iteration_number() -> i64;
    pub fn env_get(key_ptr: *const u8, key_len: usize) -> i32;
    pub fn log(level: i32, ptr: *const u8, len: usize);
    pub fn expected_statuses(ptr: *const u8, len: usize);
    pub fn cookies_clear();
    pub fn cookie_get(
        url_ptr: *const u8,
        url_len: usize,
        name_ptr: *const u8,
        name_len: usize,
    ) -> i32;
    pub fn data_len(name_ptr: *const u8, name_len: usize) -> i64;
    pub fn data_row(name_ptr: *const u8, name_len: usize, index: i64) -> i32;
    pub fn data_next(name_ptr: *const u8, name_len: usize) -> i64;
    pub fn setup_data_set(ptr: *const u8, len: usize);
    pub fn setup_data_get() -> i32;
    pub fn ws_connect(req_ptr: *const u8, req_len: usize) -> i32;
    pub fn ws_send(handle: i32, kind: i32, ptr: *const u8, len: usize) -> i32;
    pub fn ws_recv(handle: i32, timeout_ms: i64) -> i32;
    pub fn ws_close(handle: i32, code: i32);
}

/// Copies `len` bytes out of the host's result buffer.
pub fn take_result(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // SAFETY: buf is a live, writable allocation of exactly `len` bytes.
    let got = unsafe { result_read(buf.as_mut_ptr(), len) };
    buf.truncate(usize::try_from(got).unwrap_or(0));
    buf
}
