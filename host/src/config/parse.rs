//! The parsers of values clap cannot read by itself: durations, schema
//! names, anchored patterns and librdkafka options.

use std::time::Duration;

use regex::Regex;

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

/// A schema name the host can use unquoted in every tool: lowercase ASCII
/// letters, digits and underscores, not starting with a digit, at most 63
/// bytes (PostgreSQL's limit), and not one of PostgreSQL's own.
pub(super) fn parse_schema_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.starts_with("pg_")
        && s != "information_schema";
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a schema name the host accepts: lowercase letters, digits and underscores, \
             at most 63, not starting with a digit or pg_"
        ))
    }
}

pub(super) fn parse_anchored_regex(s: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{s})$")).map_err(|e| e.to_string())
}

pub(super) fn parse_kafka_option(s: &str) -> Result<(String, String), String> {
    let s = s.trim();
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}
