//! What a scenario writes to WASI stdout and stderr, on its way to the
//! node's own: escaped, one line at a time behind its VU, and rate-limited.
//!
//! A scenario is code from whoever submitted the run, and its output lands
//! on the terminal of every node that runs it. So its bytes never reach the
//! terminal as they are: control characters other than tab (escape
//! sequences can move the cursor, rewrite the screen or set the window
//! title), the C1 controls and the bidirectional overrides (which reorder
//! what a line seems to say) are written out as `\x1b` or `\u{202e}`, and
//! bytes that are not UTF-8 as `\xff`. Each line is prefixed with its VU
//! (`[vu 12] `; VU 0 runs `setup` and `teardown`) and written whole, so
//! the lines of many VUs never mix within a line.
//!
//! Each VU may write [`MAX_LINES_PER_SECOND`] lines or
//! [`MAX_BYTES_PER_SECOND`] bytes a second, stdout and stderr together;
//! what is over is dropped and counted, and one note on stderr says how many
//! lines were suppressed when the VU writes again after that second, or
//! when it ends. A line longer than [`MAX_LINE`] bytes is cut into pieces.
//!
//! A scenario that writes nothing costs one small allocation per VU: the
//! work is all in [`VuOutput::write`], which only a write calls.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Lines one VU may write per second before the rest of that second is
/// suppressed.
pub const MAX_LINES_PER_SECOND: u32 = 64;

/// Bytes (as the scenario wrote them) one VU may write per second.
pub const MAX_BYTES_PER_SECOND: usize = 16 << 10;

/// The longest line, in bytes as written; a longer one is cut.
pub const MAX_LINE: usize = 4 << 10;

/// The window of the rate limit.
const WINDOW: Duration = Duration::from_secs(1);

/// The most a guest may hand over in one write.
const MAX_WRITE: usize = 64 << 10;

/// Which of the node's streams a guest's stream goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What one write of a guest becomes: escaped, prefixed lines for the
/// node's stdout and stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// For the node's stdout.
    pub stdout: Vec<u8>,
    /// For the node's stderr.
    pub stderr: Vec<u8>,
}

impl Rendered {
    fn to(&mut self, fd: Fd) -> &mut Vec<u8> {
        match fd {
            Fd::Stdout => &mut self.stdout,
            Fd::Stderr => &mut self.stderr,
        }
    }
}

/// The lines of one VU: partial lines, and the rate limit's window. Pure:
/// bytes and the time in, [`Rendered`] out.
#[derive(Debug)]
pub struct Lines {
    prefix: String,
    /// What came since the last newline, per stream.
    partial: [Vec<u8>; 2],
    window_start: Option<Instant>,
    lines: u32,
    bytes: usize,
    suppressed: u64,
}

impl Lines {
    /// The lines of VU `vu`.
    pub fn new(vu: u64) -> Lines {
        Lines {
            prefix: format!("[vu {vu}] "),
            partial: [Vec::new(), Vec::new()],
            window_start: None,
            lines: 0,
            bytes: 0,
            suppressed: 0,
        }
    }

    /// Takes `bytes` written to `fd` at `now`, and adds every line they
    /// complete to `out`.
    pub fn write(&mut self, fd: Fd, bytes: &[u8], now: Instant, out: &mut Rendered) {
        let slot = fd as usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = MAX_LINE - self.partial[slot].len();
            let take = rest.len().min(room);
            match rest[..take].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial[slot].extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                }
                None => {
                    self.partial[slot].extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.partial[slot].len() < MAX_LINE {
                        break;
                    }
                }
            }
            let line = std::mem::take(&mut self.partial[slot]);
            self.emit(fd, &line, now, out);
        }
    }

    /// The VU is done: what is left of a line, and the count of lines
    /// suppressed.
    pub fn finish(&mut self, now: Instant, out: &mut Rendered) {
        for fd in [Fd::Stdout, Fd::Stderr] {
            let line = std::mem::take(&mut self.partial[fd as usize]);
            if !line.is_empty() {
                self.emit(fd, &line, now, out);
            }
        }
        self.note(out);
    }

    fn emit(&mut self, fd: Fd, line: &[u8], now: Instant, out: &mut Rendered) {
        if self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW)
        {
            self.note(out);
            self.window_start = Some(now);
            self.lines = 0;
            self.bytes = 0;
        }
        if self.lines >= MAX_LINES_PER_SECOND || self.bytes + line.len() > MAX_BYTES_PER_SECOND {
            self.suppressed += 1;
            return;
        }
        self.lines += 1;
        self.bytes += line.len();
        let to = out.to(fd);
        to.extend_from_slice(self.prefix.as_bytes());
        escape_into(line, to);
        to.push(b'\n');
    }

    fn note(&mut self, out: &mut Rendered) {
        if self.suppressed > 0 {
            let n = std::mem::take(&mut self.suppressed);
            let _ = writeln!(
                out.stderr,
                "{}output suppressed: {n} lines (over {MAX_LINES_PER_SECOND} lines or \
                 {MAX_BYTES_PER_SECOND} bytes a second)",
                self.prefix
            );
        }
    }
}

/// Whether `c` reorders the text around it (bidirectional controls).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Appends `line` to `out` with every control character but tab, every
/// bidirectional control and every byte that is not UTF-8 escaped.
pub fn escape_into(line: &[u8], out: &mut Vec<u8>) {
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\t' || !(c.is_control() || is_bidi_control(c)) {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            } else if c.is_ascii() {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            } else {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// The output of one VU, shared by its stdout and stderr and by every
/// instance it runs (a failed iteration swaps the instance, not the limit).
#[derive(Debug)]
pub struct VuOutput {
    lines: Mutex<Lines>,
}

impl VuOutput {
    /// The output of VU `vu`.
    pub fn new(vu: u64) -> Arc<VuOutput> {
        Arc::new(VuOutput {
            lines: Mutex::new(Lines::new(vu)),
        })
    }

    /// The stream a guest's `fd` writes to.
    pub fn stream(self: &Arc<Self>, fd: Fd) -> VuStream {
        VuStream {
            output: self.clone(),
            fd,
        }
    }

    fn write(&self, fd: Fd, bytes: &[u8]) {
        let mut out = Rendered::default();
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).write(
            fd,
            bytes,
            Instant::now(),
            &mut out,
        );
        emit(out);
    }
}

impl Drop for VuOutput {
    fn drop(&mut self) {
        let mut out = Rendered::default();
        self.lines
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .finish(Instant::now(), &mut out);
        emit(out);
    }
}

/// Writes rendered lines to the node's own streams. A stream that cannot
/// take them (closed) loses them: a scenario's output is never worth
/// failing an iteration for.
fn emit(out: Rendered) {
    if !out.stdout.is_empty() {
        let _ = std::io::stdout().lock().write_all(&out.stdout);
    }
    if !out.stderr.is_empty() {
        let _ = std::io::stderr().lock().write_all(&out.stderr);
    }
}

/// A guest's stdout or stderr: what wasmtime-wasi writes to.
#[derive(Debug, Clone)]
pub struct VuStream {
    output: Arc<VuOutput>,
    fd: Fd,
}

impl IsTerminal for VuStream {
    /// Never a terminal, so a scenario does not colour what it writes.
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for VuStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for VuStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.fd, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_WRITE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for VuStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for VuStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.write(self.fd, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        escape_into(bytes, &mut out);
        String::from_utf8(out).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    #[test]
    fn control_characters_but_tab_are_escaped_and_text_is_kept() {
        assert_eq!(escaped(b"ok\tgr\xc3\xbcn 200"), "ok\tgrün 200");
        assert_eq!(
            escaped(b"\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(escaped(b"a\rb\x7f\x00"), "a\\x0db\\x7f\\x00");
        // C1 controls (CSI as one character), bidirectional overrides,
        // and bytes that are not UTF-8.
        assert_eq!(escaped("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        assert_eq!(escaped("abc\u{202e}fed".as_bytes()), "abc\\u{202e}fed");
        assert_eq!(escaped(b"\xff\xfe!"), "\\xff\\xfe!");
    }

    fn write_all(lines: &mut Lines, fd: Fd, bytes: &[u8], now: Instant) -> Rendered {
        let mut out = Rendered::default();
        lines.write(fd, bytes, now, &mut out);
        out
    }

    #[test]
    fn lines_are_prefixed_whole_and_kept_apart_per_stream() {
        let t = Instant::now();
        let mut lines = Lines::new(12);
        let out = write_all(&mut lines, Fd::Stdout, b"hel", t);
        assert_eq!(out, Rendered::default(), "no line yet");
        let out = write_all(&mut lines, Fd::Stderr, b"oops\n", t);
        assert_eq!(out.stderr, b"[vu 12] oops\n");
        let out = write_all(&mut lines, Fd::Stdout, b"lo\nworld\n\x1b[31mred\n", t);
        assert_eq!(
            out.stdout,
            b"[vu 12] hello\n[vu 12] world\n[vu 12] \\x1b[31mred\n"
        );
        assert!(out.stderr.is_empty());
        let _ = write_all(&mut lines, Fd::Stdout, b"no newline", t);
        let mut out = Rendered::default();
        lines.finish(t, &mut out);
        assert_eq!(out.stdout, b"[vu 12] no newline\n");
    }

    #[test]
    fn a_long_line_is_cut() {
        let t = Instant::now();
        let mut lines = Lines::new(1);
        let out = write_all(&mut lines, Fd::Stdout, &vec![b'a'; MAX_LINE + 10], t);
        let expected = format!("[vu 1] {}\n", "a".repeat(MAX_LINE));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        let mut out = Rendered::default();
        lines.finish(t, &mut out);
        assert_eq!(out.stdout, b"[vu 1] aaaaaaaaaa\n");
    }

    #[test]
    fn a_flood_is_cut_at_the_line_limit_then_one_note_counts_the_rest() {
        let t = Instant::now();
        let mut lines = Lines::new(3);
        let flood = b"x\n".repeat(1000);
        let out = write_all(&mut lines, Fd::Stdout, &flood, t);
        assert_eq!(
            out.stdout.len(),
            MAX_LINES_PER_SECOND as usize * "[vu 3] x\n".len()
        );
        assert!(out.stderr.is_empty(), "the note waits for the window's end");
        // Still within the second: nothing.
        let out = write_all(
            &mut lines,
            Fd::Stderr,
            b"more\n",
            t + Duration::from_millis(999),
        );
        assert_eq!(out, Rendered::default());
        // The next second: the note, then the line.
        let out = write_all(&mut lines, Fd::Stdout, b"next\n", t + WINDOW);
        let note = String::from_utf8_lossy(&out.stderr);
        assert!(
            note.starts_with("[vu 3] output suppressed: 937 lines"),
            "{note}"
        );
        assert_eq!(note.lines().count(), 1);
        assert_eq!(out.stdout, b"[vu 3] next\n");
    }

    #[test]
    fn a_flood_of_bytes_is_cut_at_the_byte_limit_and_the_note_comes_at_the_end() {
        let t = Instant::now();
        let mut lines = Lines::new(4);
        let line = [b"y".repeat(MAX_LINE - 1), b"\n".to_vec()].concat();
        let out = write_all(&mut lines, Fd::Stdout, &line.repeat(10), t);
        let kept = MAX_BYTES_PER_SECOND / (MAX_LINE - 1);
        assert_eq!(
            out.stdout.iter().filter(|&&b| b == b'\n').count(),
            kept,
            "{kept} lines of {} bytes fit in {MAX_BYTES_PER_SECOND}",
            MAX_LINE - 1
        );
        let mut out = Rendered::default();
        lines.finish(t, &mut out);
        assert!(out.stdout.is_empty());
        let note = String::from_utf8_lossy(&out.stderr);
        assert!(
            note.starts_with(&format!("[vu 4] output suppressed: {} lines", 10 - kept)),
            "{note}"
        );
    }
}
