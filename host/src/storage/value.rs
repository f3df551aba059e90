//! How a record's value is kept: once, and compressed when that pays.
//!
//! The value is the audit record, so it is stored byte for byte. Most values
//! are a few hundred bytes of JSON, which PostgreSQL never compresses (it
//! compresses a row only once it passes about 2 KB), and which made up most
//! of the table. So the host compresses each value itself with zstd before
//! writing it: `value_zstd` holds a zstd frame whose content is exactly the
//! value, and `raw_value` the value as it is when compressing would save
//! too little (short or incompressible values) or compression is off
//! (`VALUE_COMPRESSION=off`). A tombstone has neither. Every read goes
//! through [`stored_value`], so the API, the console and `renormalize` see
//! the exact bytes either way; from SQL, `raw_value` is readable as it
//! always was, and `value_zstd` through `zstd -d`.

use std::borrow::Cow;
use std::cell::RefCell;

/// Values shorter than this are stored as they are: a zstd frame's own
/// header would eat most of what compressing them saves.
const MIN_COMPRESSED_INPUT: usize = 64;

/// zstd's level: -1, one of its fast levels. On the benchmark's values
/// (`scripts/bench` prints the sweep) it stores 44% of a value's bytes in
/// 1.8 µs, where the default level 3 stores 36% in 6.3 µs; on two cores the
/// difference is about a tenth of the drain rate, for a few percent of the
/// disk.
pub const LEVEL: i32 = -1;

/// The largest value a frame may expand to when read: above any record a
/// broker carries, so only a corrupt frame meets it.
const MAX_VALUE_BYTES: usize = 256 << 20;

thread_local! {
    /// One compressor per thread, reused across records (a zstd context is
    /// costly to set up for every few hundred bytes).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// `value` as a zstd frame, when that is at least an eighth smaller; None
/// when the value is better stored as it is.
pub fn compress(value: &[u8]) -> Option<Vec<u8>> {
    if !worth_compressing(value) {
        return None;
    }
    let frame = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        slot.as_mut()?.compress(value).ok()
    })?;
    pays(value, &frame).then_some(frame)
}

/// Whether a value is long enough for a frame to pay.
pub fn worth_compressing(value: &[u8]) -> bool {
    value.len() >= MIN_COMPRESSED_INPUT
}

/// Whether `frame` saves at least an eighth of `value`.
pub fn pays(value: &[u8], frame: &[u8]) -> bool {
    frame.len() <= value.len() - value.len() / 8
}

/// A stored value could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("the stored value is not a readable zstd frame: {0}")]
pub struct CorruptValue(String);

/// The exact value of a stored row, from its `raw_value` and `value_zstd`
/// columns; None for a tombstone.
pub fn stored_value<'a>(raw: Option<&'a [u8]>, zstd: Option<&[u8]>) -> Result<Option<Cow<'a, [u8]>>, CorruptValue> {
    match (raw, zstd) {
        (Some(raw), _) => Ok(Some(Cow::Borrowed(raw))),
        (None, Some(frame)) => zstd::bulk::decompress(frame, MAX_VALUE_BYTES)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(|e| CorruptValue(e.to_string())),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_exactly() {
        let json = br#"{"type": "order.created", "payload": {"order_id": 42, "notes": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        let frame = compress(json).expect("compressible JSON is compressed");
        assert!(frame.len() < json.len() * 3 / 4, "{} of {}", frame.len(), json.len());
        assert_eq!(stored_value(None, Some(&frame)).unwrap().unwrap().as_ref(), json);
        // Short and incompressible values are kept as they are.
        assert_eq!(compress(b"{\"a\": 1}"), None);
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
        assert_eq!(stored_value(Some(b"x"), None).unwrap().unwrap().as_ref(), b"x");
        assert!(stored_value(None, None).unwrap().is_none());
        assert!(stored_value(None, Some(b"not a frame")).is_err());
        // The empty value is a value, not a tombstone.
        assert_eq!(stored_value(Some(b""), None).unwrap().unwrap().as_ref(), b"");
    }
}
