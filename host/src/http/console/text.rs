//! Turning stored values into readable text for the console: cutting long
//! values, laying out JSON, hex dumps of bytes that are not UTF-8, and
//! durations in words. Everything here returns plain text; the templates
//! escape it.

use std::borrow::Cow;

use chrono::TimeDelta;

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// The deepest indentation JSON is laid out with; deeper levels stay at it,
/// so a 10,000-level document does not become megabytes of spaces.
const MAX_INDENT: usize = 24;

/// JSON text laid out with one member per line, in at most `max_bytes`;
/// true when it was cut. It never builds a tree, so any nesting depth is
/// laid out in one pass, and text that is not JSON comes out re-spaced but
/// whole (strings are copied as they are).
pub fn pretty_json(text: &str, max_bytes: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max_bytes) + text.len().min(max_bytes) / 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if out.len() >= max_bytes {
            return (out, true);
        }
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(c);
                    out.push(close);
                } else {
                    out.push(c);
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    (out, false)
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth.min(MAX_INDENT) {
        out.push_str("  ");
    }
}

/// A hex dump of at most `max_bytes` of `bytes`, 16 to a line with their
/// offset and the printable ASCII beside; true when cut.
pub fn hex_dump(bytes: &[u8], max_bytes: usize) -> (String, bool) {
    let shown = &bytes[..bytes.len().min(max_bytes)];
    let mut out = String::with_capacity(shown.len() * 4 + shown.len() / 16 * 12);
    for (i, line) in shown.chunks(16).enumerate() {
        out.push_str(&format!("{:08x}  ", i * 16));
        for j in 0..16 {
            match line.get(j) {
                Some(b) => out.push_str(&format!("{b:02x} ")),
                None => out.push_str("   "),
            }
        }
        out.push_str(" |");
        out.extend(line.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }));
        out.push_str("|\n");
    }
    (out, shown.len() < bytes.len())
}

/// Bytes as hex pairs, for short values (keys, header values).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// A duration in words: "0.25 s", "12 s", "3 min 4 s", "2 h 5 min",
/// "3 days 4 h". Negative durations read as their size.
pub fn span(d: TimeDelta) -> String {
    let ms = d.num_milliseconds().unsigned_abs();
    let s = ms / 1000;
    match s {
        0..10 => format!("{:.2} s", ms as f64 / 1000.0).replace(".00 s", " s"),
        10..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => {
            let days = s / 86_400;
            format!("{days} day{} {} h", if days == 1 { "" } else { "s" }, s % 86_400 / 3600)
        }
    }
}

/// Percent-encodes an id for one path segment (everything but unreserved
/// characters), so a link is a valid same-site path for any id: no id can
/// turn it into another scheme or host.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééé", 2), "éé…");
    }

    #[test]
    fn json_layout() {
        let (out, cut) = pretty_json(r#"{"a": [1, {"b": "x,{y}\"z"}], "e": {}, "f": [ ]}"#, 1000);
        assert!(!cut);
        assert_eq!(
            out,
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x,{y}\\\"z\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}"
        );
    }

    #[test]
    fn deep_json_is_laid_out_without_recursion_and_bounded() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let (out, cut) = pretty_json(&deep, 64 << 10);
        assert!(cut);
        assert!(out.len() <= (64 << 10) + 64);
        let (whole, cut) = pretty_json(&deep, usize::MAX);
        assert!(!cut);
        assert_eq!(whole.matches('[').count(), 10_000);
    }

    #[test]
    fn hex_dump_lines() {
        let (out, cut) = hex_dump(b"{\"a\":\xff}", 100);
        assert!(!cut);
        assert_eq!(out, "00000000  7b 22 61 22 3a ff 7d                             |{\"a\":.}|\n");
        assert!(hex_dump(&[0u8; 40], 16).1);
    }

    #[test]
    fn spans_in_words() {
        assert_eq!(span(TimeDelta::milliseconds(250)), "0.25 s");
        assert_eq!(span(TimeDelta::seconds(2)), "2 s");
        assert_eq!(span(TimeDelta::seconds(12)), "12 s");
        assert_eq!(span(TimeDelta::seconds(184)), "3 min 4 s");
        assert_eq!(span(TimeDelta::seconds(7500)), "2 h 5 min");
        assert_eq!(span(TimeDelta::seconds(86_400 + 3600)), "1 day 1 h");
        assert_eq!(span(TimeDelta::seconds(-12)), "12 s");
    }

    #[test]
    fn segments_stay_paths() {
        assert_eq!(path_segment("order 42/x"), "order%2042%2Fx");
        assert_eq!(path_segment("javascript:alert(1)"), "javascript%3Aalert%281%29");
    }
}
