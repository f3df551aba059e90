//! Bytes on the wire that are not valid HTTP, sent to the real binary: each
//! gets a 4xx (from the HTTP layer, before any route), never a 5xx or a
//! dropped server, and the host keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use notification_e2e::*;

/// Sends `request` and answers the status code of the reply, if any.
fn raw_status(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http_gets_a_4xx_and_the_host_keeps_serving() {
    let prefix = unique("wire");
    let (db_url, _pool) = fresh_database("wire").await;
    let host = Host::start(&HostOptions::new(&db_url, &prefix));
    host.wait_ready(Duration::from_secs(60));

    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let long_header = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "y".repeat(500_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("non-UTF-8 path", b"GET /order/\xff\xfe/latest HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("space in the path", b"GET /order/a b/latest HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("control byte in the path", b"GET /order/\x01/latest HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("not HTTP", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("binary", vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, b'\r', b'\n', b'\r', b'\n'], 400),
        ("70,000-byte URI", long_uri.into_bytes(), 414),
        ("500,000-byte header", long_header.into_bytes(), 431),
        ("negative Content-Length", b"POST /send-notification HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        (
            "two Content-Lengths",
            b"POST /send-notification HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            400,
        ),
        // Routed: the headers are fine, the chunked body is not. A broken
        // transfer is the client's error, not an oversized body.
        (
            "bad chunked body",
            b"POST /send-notification HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunked body over the cap",
            format!(
                "POST /send-notification HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                2 << 20,
                "x".repeat(2 << 20)
            )
            .into_bytes(),
            413,
        ),
    ];
    for (what, request, expected) in &cases {
        let status = raw_status(host.http, request);
        assert_eq!(status, Some(*expected), "{what}");
    }
    // Still serving, and still the same process.
    assert_eq!(http_get(host.http, "/health").map(|(s, _)| s), Some(200));
    assert_eq!(http_get(host.http, "/ready").map(|(s, _)| s), Some(200));
}
