//! The domain types every part of the host shares: a Kafka record as it was
//! received, and what a normalizer made of it.

pub use normalizer_rules::Fields;

/// One Kafka record header. Kafka allows repeated names and null values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as text (lossy, with U+FFFD, when its bytes are not UTF-8).
    pub key: String,
    pub value: Option<Vec<u8>>,
    /// The name's exact bytes, when they are not UTF-8 (a producer may send
    /// any bytes); None when `key` is exact.
    pub key_bytes: Option<Vec<u8>>,
}

impl Header {
    /// A header whose name is text.
    pub fn new(key: impl Into<String>, value: Option<Vec<u8>>) -> Header {
        Header { key: key.into(), value, key_bytes: None }
    }

    /// A header from a name's bytes: `key` is exact when they are UTF-8,
    /// otherwise `key_bytes` keeps them.
    pub fn from_bytes(name: Vec<u8>, value: Option<Vec<u8>>) -> Header {
        match String::from_utf8(name) {
            Ok(key) => Header::new(key, value),
            Err(e) => {
                let bytes = e.into_bytes();
                Header { key: String::from_utf8_lossy(&bytes).into_owned(), value, key_bytes: Some(bytes) }
            }
        }
    }
}

/// A Kafka record, owned, exactly as the broker delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the broker gave one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// The value of the first header named `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// What a normalizer made of one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalized {
    pub fields: Fields,
    /// `name@version` of the normalizer that produced `fields`.
    pub normalizer: String,
    /// Why the chosen normalizer failed for this record, when it did; the
    /// fields then come from the built-in default.
    pub error: Option<String>,
    /// What was left out of `fields` and why (a placeholder such as
    /// `"unknown"` where an id belongs); the row's ingest note says it.
    pub notes: Vec<String>,
}
