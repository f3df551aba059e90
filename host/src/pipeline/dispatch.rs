//! The dispatcher: which writer each part of a batch goes to.

use std::collections::HashMap;

use super::Prepared;

/// Which writer each batch part goes to. A partition with rows in flight
/// (handed to a writer, offsets not yet stored) goes to that same writer,
/// which writes its parts in order; any other partition to the writer with
/// the fewest rows in flight. So a partition's parts are never written by
/// two writers at once, and its offsets are stored in order.
pub(super) struct Dispatch {
    state: std::sync::Mutex<DispatchState>,
}

struct DispatchState {
    /// Per partition in flight: its writer and how many parts hold it.
    owners: HashMap<(String, i32), (usize, usize)>,
    /// Rows in flight per writer.
    load: Vec<usize>,
}

impl Dispatch {
    pub(super) fn new(lanes: usize) -> Dispatch {
        Dispatch { state: std::sync::Mutex::new(DispatchState { owners: HashMap::new(), load: vec![0; lanes] }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        // The state is a few counters, consistent after every statement.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The batch as one part per writer (None for a writer it has nothing
    /// for), each partition's rows in their order, marked in flight.
    pub(super) fn split(&self, batch: Prepared) -> Vec<Option<Prepared>> {
        let mut state = self.lock();
        let lanes = state.load.len();
        if lanes <= 1 {
            for key in batch.last_offsets.keys() {
                state.owners.entry(key.clone()).or_insert((0, 0)).1 += 1;
            }
            state.load[0] += batch.rows.len();
            return vec![Some(batch)];
        }
        let mut rows_of: HashMap<(String, i32), usize> = HashMap::new();
        for row in &batch.rows {
            *rows_of.entry((row.source_topic.clone(), row.kafka_partition.unwrap_or_default())).or_default() += 1;
        }
        // Partitions in flight first (their writer is fixed), then the
        // largest, each to the least-loaded writer.
        let mut keys: Vec<_> = rows_of.iter().map(|(k, n)| (k.clone(), *n)).collect();
        keys.sort_by_key(|(k, n)| (!state.owners.contains_key(k), std::cmp::Reverse(*n)));
        let mut lane_of: HashMap<(String, i32), usize> = HashMap::new();
        for (key, n) in keys {
            let lane = match state.owners.get(&key) {
                Some((lane, _)) => *lane,
                None => (0..lanes).min_by_key(|l| state.load[*l]).unwrap_or(0),
            };
            state.load[lane] += n;
            state.owners.entry(key.clone()).or_insert((lane, 0)).1 += 1;
            lane_of.insert(key, lane);
        }
        drop(state);
        let mut parts: Vec<Prepared> = (0..lanes)
            .map(|_| Prepared {
                marks: batch.marks,
                rows: Vec::new(),
                last_offsets: HashMap::new(),
                per_topic: HashMap::new(),
            })
            .collect();
        for row in batch.rows {
            let key = (row.source_topic.clone(), row.kafka_partition.unwrap_or_default());
            let part = &mut parts[lane_of.get(&key).copied().unwrap_or(0)];
            *part.per_topic.entry(row.source_topic.clone()).or_default() += 1;
            part.rows.push(row);
        }
        for (key, offset) in batch.last_offsets {
            let lane = lane_of.get(&key).copied().unwrap_or(0);
            parts[lane].last_offsets.insert(key, offset);
        }
        parts.into_iter().map(|p| (!p.rows.is_empty()).then_some(p)).collect()
    }

    /// A writer stored the offsets of a part it was given.
    pub(super) fn done(&self, lane: usize, part: &Prepared) {
        let mut state = self.lock();
        if let Some(load) = state.load.get_mut(lane) {
            *load = load.saturating_sub(part.rows.len());
        }
        for key in part.last_offsets.keys() {
            if let Some((_, parts)) = state.owners.get_mut(key) {
                *parts = parts.saturating_sub(1);
                if *parts == 0 {
                    state.owners.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Normalized, Record};
    use crate::storage::StoredRow;

    fn batch(parts: &[(&str, i32, i64)]) -> Prepared {
        let mut last_offsets = HashMap::new();
        let rows = parts
            .iter()
            .map(|&(topic, partition, offset)| {
                last_offsets.insert((topic.to_owned(), partition), offset);
                let record = Record {
                    topic: topic.into(),
                    partition,
                    offset,
                    timestamp: Some(1_743_760_800_000),
                    key: None,
                    headers: Vec::new(),
                    value: Some(b"{}".to_vec()),
                };
                StoredRow::from_record(
                    record,
                    Normalized {
                        fields: Default::default(),
                        normalizer: "default".into(),
                        error: None,
                        notes: Vec::new(),
                    },
                )
            })
            .collect();
        Prepared { marks: Default::default(), rows, last_offsets, per_topic: HashMap::new() }
    }

    fn lanes_of(parts: &[Option<Prepared>]) -> Vec<Vec<(String, i32)>> {
        parts
            .iter()
            .map(|p| {
                let mut keys: Vec<_> = p.iter().flat_map(|p| p.last_offsets.keys().cloned()).collect();
                keys.sort();
                keys
            })
            .collect()
    }

    #[test]
    fn a_partition_in_flight_stays_on_its_writer_and_others_go_to_the_idle_one() {
        let d = Dispatch::new(2);
        let first = d.split(batch(&[("a", 0, 1), ("a", 0, 2)]));
        assert_eq!(lanes_of(&first), [vec![("a".to_owned(), 0)], vec![]]);
        // `a/0` is still being written by writer 0; `b/0` goes to writer 1.
        let second = d.split(batch(&[("a", 0, 3), ("b", 0, 1)]));
        assert_eq!(lanes_of(&second), [vec![("a".to_owned(), 0)], vec![("b".to_owned(), 0)]]);
        // Rows keep their order within a partition.
        let offsets: Vec<_> = second[0].iter().flat_map(|p| p.rows.iter().map(|r| r.kafka_offset)).collect();
        assert_eq!(offsets, [Some(3)]);
        // Once both of writer 0's parts are done, `a/0` may move.
        for part in first.iter().chain(&second[..1]).flatten() {
            d.done(0, part);
        }
        let third = d.split(batch(&[("a", 0, 4), ("a", 0, 5), ("a", 0, 6)]));
        assert_eq!(lanes_of(&third), [vec![("a".to_owned(), 0)], vec![]], "writer 0 is now the least loaded");
        let fourth = d.split(batch(&[("b", 0, 2)]));
        assert_eq!(lanes_of(&fourth), [vec![], vec![("b".to_owned(), 0)]], "b/0 is still on writer 1");
    }
}
