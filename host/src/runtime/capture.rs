//! What a module prints: stdout and stderr, captured per call up to a cap,
//! for the tester and the host's log.

use std::sync::{Arc, Mutex};

/// What a module printed (stdout and stderr, interleaved as a terminal
/// shows them) since it was last taken, up to a cap. Writes beyond the cap
/// are counted and dropped, never refused: a chatty module must not fail
/// because of its logging.
#[derive(Clone)]
pub(super) struct Captured(Arc<Mutex<CapturedText>>);

struct CapturedText {
    bytes: Vec<u8>,
    dropped: usize,
    cap: usize,
}

impl Captured {
    pub(super) fn new(cap: usize) -> Captured {
        Captured(Arc::new(Mutex::new(CapturedText { bytes: Vec::new(), dropped: 0, cap })))
    }

    fn push(&self, data: &[u8]) {
        if let Ok(mut c) = self.0.lock() {
            let room = c.cap.saturating_sub(c.bytes.len());
            let taken = data.len().min(room);
            c.bytes.extend_from_slice(&data[..taken]);
            c.dropped += data.len() - taken;
        }
    }

    /// Everything printed since the last take, or None if nothing was.
    pub(super) fn take(&self) -> Option<String> {
        let mut c = self.0.lock().ok()?;
        if c.bytes.is_empty() && c.dropped == 0 {
            return None;
        }
        let mut text = String::from_utf8_lossy(&c.bytes).into_owned();
        if c.dropped > 0 {
            text.push_str(&format!("\n… {} more bytes not kept", c.dropped));
        }
        c.bytes.clear();
        c.dropped = 0;
        Some(text)
    }
}

impl wasmtime_wasi::cli::IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::p2::OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
