//! Header names as bytes. A Kafka header name is a length-prefixed byte
//! string on the wire; rdkafka's safe API hands it out as `&str` and panics
//! when it is not UTF-8, so a record carrying such a name could not be
//! stored whole. librdkafka itself keeps the bytes: these two functions reach
//! them through its C API. This is the only crate of the workspace with
//! unsafe code, kept to the calls and the pointer reads they need.
//!
//! librdkafka stores a header name NUL-terminated, so a name is read up to
//! its first NUL byte (the same limit librdkafka's own accessors have).

use std::ffi::{CStr, c_char, c_void};

use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedMessage, OwnedHeaders};

/// One header: the name's bytes, and the value (None for a null value).
pub type RawHeader = (Vec<u8>, Option<Vec<u8>>);

/// The headers of a consumed message, in order, names and values as bytes.
pub fn headers(message: &BorrowedMessage<'_>) -> Vec<RawHeader> {
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is the live librdkafka message that `message`
    // borrows; librdkafka writes a pointer to the headers it owns (or leaves
    // it null and returns an error when there are none).
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut hdrs) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for idx in 0.. {
        let (mut name, mut value, mut size): (*const c_char, *const c_void, usize) =
            (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: `hdrs` is valid while `message` is borrowed; librdkafka
        // bounds-checks `idx` and returns an error past the last header.
        let err = unsafe { rd::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka keeps each name NUL-terminated, owned by the
        // headers, which outlive this loop; the bytes are copied out at once.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: `value` points to `size` bytes owned by the headers,
            // valid while `message` is borrowed; copied out at once.
            Some(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec())
        };
        out.push((name, value));
    }
    out
}

/// Adds a header whose name is arbitrary bytes (without NUL) to headers
/// about to be produced: what the tests need to send a name that is not
/// UTF-8, which rdkafka's `OwnedHeaders::insert` cannot express.
pub fn add_header(headers: OwnedHeaders, name: &[u8], value: Option<&[u8]>) -> Result<OwnedHeaders, String> {
    // rdkafka's own `BorrowedHeaders::as_native_ptr` is this cast: the
    // borrowed form is a zero-sized view of the native headers.
    let hdrs = std::ptr::from_ref(headers.as_borrowed()).cast::<rd::rd_kafka_headers_t>().cast_mut();
    let (value_ptr, value_len) = match value {
        Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `hdrs` is the native headers `headers` owns, alive for this
    // call; librdkafka copies `name_len` bytes of the name and the value.
    let err = unsafe {
        rd::rd_kafka_header_add(hdrs, name.as_ptr().cast::<c_char>(), name.len() as isize, value_ptr, value_len)
    };
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(headers)
    } else {
        Err(format!("rd_kafka_header_add failed: {err:?}"))
    }
}
