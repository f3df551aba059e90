//! Routing: which module a record goes to, by its topic, a header, its key
//! and members of its JSON value (parsed once per record for every module).

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;

use super::manifest::{FieldRule, FieldSpec, MatchRules};
use crate::record::Record;

/// A compiled field rule.
#[derive(Debug, Clone)]
enum FieldTest {
    Equals(String),
    Glob(globset::GlobMatcher),
    Present(bool),
}

/// Compiled match rules.
#[derive(Debug, Clone)]
pub(super) struct Route {
    globs: GlobSet,
    regexes: Vec<Regex>,
    header: Option<(String, String)>,
    key: Option<globset::GlobMatcher>,
    fields: Vec<(Vec<String>, FieldTest)>,
}

impl Route {
    pub(super) fn new(rules: &MatchRules) -> Result<Route, String> {
        if rules.topics.is_empty() {
            return Err("match.topics is empty".into());
        }
        let mut globs = GlobSetBuilder::new();
        let mut regexes = Vec::new();
        for t in &rules.topics {
            match t.strip_prefix("re:") {
                Some(re) => regexes.push(Regex::new(re).map_err(|e| format!("bad topic regex {re:?}: {e}"))?),
                None => {
                    globs.add(Glob::new(t).map_err(|e| format!("bad topic glob {t:?}: {e}"))?);
                }
            }
        }
        let header = match &rules.header {
            Some(h) => match h.split_once('=') {
                Some((k, v)) if !k.is_empty() => Some((k.to_owned(), v.to_owned())),
                _ => return Err(format!("match.header must be name=value, got {h:?}")),
            },
            None => None,
        };
        let glob = |what: &str, g: &str| {
            Glob::new(g).map(|g| g.compile_matcher()).map_err(|e| format!("bad {what} glob {g:?}: {e}"))
        };
        let key = rules.key.as_deref().map(|k| glob("match.key", k)).transpose()?;
        let mut fields = Vec::new();
        for (path, rule) in &rules.fields {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(format!("match.fields: {path:?} is not a dotted path of member names"));
            }
            let test = match rule {
                FieldRule::Equals(v) => FieldTest::Equals(v.clone()),
                FieldRule::Spec(FieldSpec { equals: Some(v), glob: None, present: None }) => {
                    FieldTest::Equals(v.clone())
                }
                FieldRule::Spec(FieldSpec { equals: None, glob: Some(g), present: None }) => {
                    FieldTest::Glob(glob(&format!("match.fields.{path}"), g)?)
                }
                FieldRule::Spec(FieldSpec { equals: None, glob: None, present: Some(p) }) => FieldTest::Present(*p),
                FieldRule::Spec(_) => {
                    return Err(format!("match.fields.{path} needs exactly one of equals, glob or present"));
                }
            };
            fields.push((segments, test));
        }
        Ok(Route { globs: globs.build().map_err(|e| e.to_string())?, regexes, header, key, fields })
    }

    pub(super) fn matches(&self, record: &Record, doc: &mut Doc<'_>) -> bool {
        let topic_ok = self.globs.is_match(&record.topic) || self.regexes.iter().any(|r| r.is_match(&record.topic));
        topic_ok
            && self.header.as_ref().is_none_or(|(k, v)| record.header(k) == Some(v.as_str()))
            && self.key.as_ref().is_none_or(|g| {
                record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).is_some_and(|k| g.is_match(k))
            })
            && self.fields.iter().all(|(path, test)| {
                let value = doc.member(path);
                match test {
                    FieldTest::Present(want) => value.is_some() == *want,
                    FieldTest::Equals(want) => matches!(value, Some(Member::Text(v)) if v == *want),
                    FieldTest::Glob(g) => matches!(value, Some(Member::Text(v)) if g.is_match(&v)),
                }
            })
    }
}

/// A member of a record's value, as field rules see it.
enum Member {
    /// A string's content, or a number's or boolean's JSON text.
    Text(String),
    /// An object or an array: present, never equal to a string.
    Structured,
}

/// A record's value, parsed at most once however many modules' field rules
/// look at it, and then only as far as their paths go: each object on a
/// path is split into its members' raw JSON text once, not decoded.
pub(super) struct Doc<'a> {
    value: Option<&'a [u8]>,
    /// Objects by dotted path ("" is the value itself); None: not an object.
    objects: HashMap<String, Option<Members>>,
}

type Members = HashMap<String, Box<serde_json::value::RawValue>>;

impl<'a> Doc<'a> {
    pub(super) fn new(record: &'a Record) -> Doc<'a> {
        Doc { value: record.value.as_deref(), objects: HashMap::new() }
    }

    /// The object at `path[..depth]`, split into members on first use.
    fn object(&mut self, path: &[String], depth: usize) -> Option<&Members> {
        let key = path[..depth].join(".");
        if !self.objects.contains_key(&key) {
            let parsed = if depth == 0 {
                self.value.and_then(|bytes| {
                    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
                    serde_json::from_slice::<Members>(bytes).ok()
                })
            } else {
                let parent = self.object(path, depth - 1)?;
                parent.get(&path[depth - 1]).and_then(|raw| serde_json::from_str::<Members>(raw.get()).ok())
            };
            self.objects.insert(key.clone(), parsed);
        }
        self.objects.get(&key)?.as_ref()
    }

    /// The member at `path`; None when it is absent or null.
    fn member(&mut self, path: &[String]) -> Option<Member> {
        let (last, _) = path.split_last()?;
        let text = self.object(path, path.len() - 1)?.get(last)?.get();
        match text.as_bytes().first()? {
            b'"' => serde_json::from_str::<String>(text).ok().map(Member::Text),
            // Numbers and booleans as sent: every digit kept.
            b'-' | b'0'..=b'9' | b't' | b'f' => Some(Member::Text(text.to_owned())),
            b'{' | b'[' => Some(Member::Structured),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn record(topic: &str, headers: &[(&str, &str)]) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            headers: headers.iter().map(|(k, v)| crate::record::Header::new(*k, Some(v.as_bytes().to_vec()))).collect(),
            value: None,
        }
    }

    fn hits(route: &Route, record: Record) -> bool {
        let mut doc = Doc::new(&record);
        route.matches(&record, &mut doc)
    }

    #[test]
    fn routes_match_globs_regexes_and_headers() {
        let r = Route::new(&MatchRules {
            topics: vec!["order_*".into(), "re:^pay(ment)?-.*$".into()],
            header: None,
            key: None,
            fields: BTreeMap::new(),
        })
        .unwrap();
        assert!(hits(&r, record("order_events", &[])));
        assert!(hits(&r, record("payment-events", &[])));
        assert!(!hits(&r, record("user_events", &[])));
        let r = Route::new(&MatchRules {
            topics: vec!["*".into()],
            header: Some("producer=payment-service".into()),
            key: None,
            fields: BTreeMap::new(),
        })
        .unwrap();
        assert!(hits(&r, record("x", &[("producer", "payment-service")])));
        assert!(!hits(&r, record("x", &[("producer", "order-service")])));
        assert!(!hits(&r, record("x", &[])));
        assert!(Route::new(&MatchRules { topics: vec![], header: None, key: None, fields: BTreeMap::new() }).is_err());
        assert!(
            Route::new(&MatchRules { topics: vec!["re:(".into()], header: None, key: None, fields: BTreeMap::new() })
                .is_err()
        );
        assert!(
            Route::new(&MatchRules {
                topics: vec!["x".into()],
                header: Some("novalue".into()),
                key: None,
                fields: BTreeMap::new()
            })
            .is_err()
        );
    }
}
