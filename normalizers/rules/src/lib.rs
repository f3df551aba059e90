//! The built-in default normalization rules.
//!
//! The host links this crate natively (no WASM cost on the default path) and
//! the `normalizer-default` component compiles the very same code, so the two
//! cannot drift apart. The rules, in the order they apply:
//!
//! 1. A tombstone, an empty value or a whitespace-only value names nothing.
//! 2. A leading UTF-8 byte order mark is skipped; invalid UTF-8 is decoded
//!    with replacement characters (for extraction only: the host stores the
//!    exact bytes).
//! 3. The value is parsed as one JSON document. A document that is a JSON
//!    string is parsed once more from its content. Anything that is not then
//!    an object names nothing; arrays are not unwrapped.
//! 4. Ids (`customer_id`, `runner_id`, `order_id`) and `status` are searched
//!    in the containers `payload`, then `data` (each when it is an object or
//!    a string holding one), then the top level; within a container the
//!    snake_case key comes before the camelCase one.
//! 5. `event_type`, `correlation_id` and `source_service` come from the top
//!    level only.
//! 6. A usable value is a non-empty string other than `"None"` and `"null"`,
//!    or an integer, rendered with every digit it was sent with. Everything
//!    else (null, booleans, floats, objects, arrays) is skipped.
//!
//! Values are never trimmed, truncated or re-cased, and an absent value is
//! `None`, never a placeholder.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The name the default rules report, natively and as a component.
pub const NAME: &str = "default";
/// The version of the rules; it changes whenever an output could change.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a normalizer extracts from one record. `None` means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub source_service: Option<String>,
    pub status: Option<String>,
}

impl Fields {
    /// True when no field was found.
    pub fn is_empty(&self) -> bool {
        *self == Fields::default()
    }

    /// Fills every field that is `None` here from `other`.
    pub fn fill_from(&mut self, other: Fields) {
        fn fill(slot: &mut Option<String>, value: Option<String>) {
            if slot.is_none() {
                *slot = value;
            }
        }
        fill(&mut self.customer_id, other.customer_id);
        fill(&mut self.runner_id, other.runner_id);
        fill(&mut self.order_id, other.order_id);
        fill(&mut self.event_type, other.event_type);
        fill(&mut self.correlation_id, other.correlation_id);
        fill(&mut self.source_service, other.source_service);
        fill(&mut self.status, other.status);
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Applies the default rules to a record value (`None` is a tombstone).
pub fn normalize(value: Option<&[u8]>) -> Fields {
    let Some(bytes) = value else {
        return Fields::default();
    };
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return Fields::default();
    }
    match document_object(&text) {
        Some(Document::Borrowed(object)) => extract(&object),
        Some(Document::Inner(inner)) => match Object::parse(&inner) {
            Some(object) => extract(&object),
            None => Fields::default(),
        },
        None => Fields::default(),
    }
}

/// The top-level object of a value: either the document itself, or the
/// content of a document that is a JSON string (decoded once).
enum Document<'a> {
    Borrowed(Object<'a>),
    Inner(String),
}

fn document_object(text: &str) -> Option<Document<'_>> {
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    match raw.get().as_bytes().first()? {
        b'{' => Object::parse(raw.get()).map(Document::Borrowed),
        b'"' => serde_json::from_str::<String>(raw.get()).ok().map(Document::Inner),
        _ => None,
    }
}

/// A JSON object whose members are kept as unparsed JSON text, so that only
/// the members the rules look at are ever decoded, and integers keep every
/// digit they were sent with.
struct Object<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Object<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The member named `key`. With duplicate keys the last one wins, as in
    /// the JSON libraries most producers use.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
            type Value = Object<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'a>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'a>>()? {
                    let value: &'a RawValue = map.next_value()?;
                    members.push((key.0, value));
                }
                Ok(Object { members })
            }
        }

        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the input unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(KeyVisitor(std::marker::PhantomData))
    }
}

/// The value of a member if the rules accept it: a non-empty string other
/// than `"None"` and `"null"`, or an integer with all its digits.
fn usable(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => {
            let s: String = serde_json::from_str(text).ok()?;
            (!s.is_empty() && s != "None" && s != "null").then_some(s)
        }
        b'-' | b'0'..=b'9' => {
            // JSON has no leading zeros or signs other than '-', so the text of
            // an integer literal is already its canonical decimal form.
            let is_integer = !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
            is_integer.then(|| text.to_owned())
        }
        _ => None,
    }
}

/// The first usable value among `keys` in `object`.
fn first_usable(object: &Object<'_>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| object.get(key).and_then(usable))
}

/// The text of a container (`payload` or `data`): the member itself when it
/// is an object, or the content of a string member (which only counts when
/// it parses as an object).
fn container_text<'a>(top: &Object<'a>, name: &str) -> Option<Cow<'a, str>> {
    let raw = top.get(name)?;
    match raw.get().as_bytes().first()? {
        b'{' => Some(Cow::Borrowed(raw.get())),
        b'"' => serde_json::from_str::<String>(raw.get()).ok().map(Cow::Owned),
        _ => None,
    }
}

fn extract(top: &Object<'_>) -> Fields {
    let payload_text = container_text(top, "payload");
    let data_text = container_text(top, "data");
    let payload = payload_text.as_deref().and_then(Object::parse);
    let data = data_text.as_deref().and_then(Object::parse);
    let containers = [payload.as_ref(), data.as_ref(), Some(top)];
    let in_containers = |keys: &[&str]| containers.iter().flatten().find_map(|object| first_usable(object, keys));

    Fields {
        customer_id: in_containers(&["customer_id", "customerId"]),
        runner_id: in_containers(&["runner_id", "runnerId"]),
        order_id: in_containers(&["order_id", "orderId"]),
        status: in_containers(&["status"]),
        event_type: first_usable(top, &["type", "event_type", "eventType"]),
        correlation_id: first_usable(top, &["correlation_id", "correlationId"]),
        source_service: first_usable(top, &["source", "source_service", "sourceService"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Fields {
        normalize(Some(text.as_bytes()))
    }

    #[test]
    fn envelope_with_payload() {
        let f = n(r#"{"type": "order.created", "correlation_id": "c-1", "source": "order-service",
                     "payload": {"order_id": 12, "customer_id": "u1", "status": "PENDING"}}"#);
        assert_eq!(f.event_type.as_deref(), Some("order.created"));
        assert_eq!(f.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(f.source_service.as_deref(), Some("order-service"));
        assert_eq!(f.order_id.as_deref(), Some("12"));
        assert_eq!(f.customer_id.as_deref(), Some("u1"));
        assert_eq!(f.status.as_deref(), Some("PENDING"));
        assert_eq!(f.runner_id, None);
    }

    #[test]
    fn nothing_for_empty_tombstone_and_non_objects() {
        assert!(normalize(None).is_empty());
        assert!(n("").is_empty());
        assert!(n(" \n\t ").is_empty());
        assert!(n("not json").is_empty());
        assert!(n(r#"[{"order_id": "1"}]"#).is_empty());
        assert!(n("42").is_empty());
        assert!(n(r#""just a string""#).is_empty());
        assert!(n(r#"{"order_id": "1"} trailing"#).is_empty());
    }

    #[test]
    fn double_encoded_document_is_decoded_once() {
        let f = n(r#""{\"order_id\": \"o-7\"}""#);
        assert_eq!(f.order_id.as_deref(), Some("o-7"));
        // Twice encoded is not unwrapped a second time.
        assert!(n(r#""\"{\\\"order_id\\\": \\\"o-7\\\"}\"""#).is_empty());
    }

    #[test]
    fn container_order_and_snake_before_camel() {
        let f = n(
            r#"{"order_id": "top", "data": {"orderId": "data"}, "payload": {"orderId": "p-camel", "order_id": "p-snake"}}"#,
        );
        assert_eq!(f.order_id.as_deref(), Some("p-snake"));
        let f = n(r#"{"order_id": "top", "data": {"orderId": "data"}}"#);
        assert_eq!(f.order_id.as_deref(), Some("data"));
        let f = n(r#"{"order_id": "top", "payload": {"orderId": null}}"#);
        assert_eq!(f.order_id.as_deref(), Some("top"));
    }

    #[test]
    fn stringified_container_is_searched() {
        let f = n(r#"{"payload": "{\"customerId\": \"c9\"}"}"#);
        assert_eq!(f.customer_id.as_deref(), Some("c9"));
        let f = n(r#"{"payload": "not an object", "customer_id": "top"}"#);
        assert_eq!(f.customer_id.as_deref(), Some("top"));
    }

    #[test]
    fn usable_values_only() {
        let f = n(
            r#"{"order_id": "None", "orderId": "null", "payload": {"order_id": ""}, "data": {"order_id": 1.5, "orderId": true}}"#,
        );
        assert_eq!(f.order_id, None);
        let f = n(r#"{"order_id": 123456789012345678901234567890}"#);
        assert_eq!(f.order_id.as_deref(), Some("123456789012345678901234567890"));
        let f = n(r#"{"order_id": -5, "runner_id": 1e3, "customer_id": [1], "status": {"a": 1}}"#);
        assert_eq!(f.order_id.as_deref(), Some("-5"));
        assert_eq!(f.runner_id, None);
        assert_eq!(f.customer_id, None);
        assert_eq!(f.status, None);
    }

    #[test]
    fn strings_kept_exactly() {
        let f = n(r#"{"order_id": "  Ord\u00e9r 1 ", "type": "ORDER_Created"}"#);
        assert_eq!(f.order_id.as_deref(), Some("  Ordér 1 "));
        assert_eq!(f.event_type.as_deref(), Some("ORDER_Created"));
    }

    #[test]
    fn bom_and_invalid_utf8() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(br#"{"order_id": "b"}"#);
        assert_eq!(normalize(Some(&bytes)).order_id.as_deref(), Some("b"));
        let bytes = b"{\"order_id\": \"x\xFFy\", \"customer_id\": \"c\"}";
        let f = normalize(Some(bytes));
        assert_eq!(f.order_id.as_deref(), Some("x\u{FFFD}y"));
        assert_eq!(f.customer_id.as_deref(), Some("c"));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(n(r#"{"order_id": "a", "order_id": "b"}"#).order_id.as_deref(), Some("b"));
    }

    #[test]
    fn deep_nesting_elsewhere_does_not_hide_ids() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let f = n(&format!(r#"{{"order_id": "o", "deep": {deep}}}"#));
        assert_eq!(f.order_id.as_deref(), Some("o"));
        // Far beyond serde_json's recursion limit: skipped unparsed, ids still found.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let f = n(&format!(r#"{{"order_id": "o", "deep": {deep}}}"#));
        assert_eq!(f.order_id.as_deref(), Some("o"));
    }

    #[test]
    fn fill_from_only_fills_gaps() {
        let mut a = Fields { order_id: Some("a".into()), ..Fields::default() };
        a.fill_from(Fields { order_id: Some("b".into()), status: Some("s".into()), ..Fields::default() });
        assert_eq!(a.order_id.as_deref(), Some("a"));
        assert_eq!(a.status.as_deref(), Some("s"));
    }
}
