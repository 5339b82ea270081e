//! The index of the partitions a limiter has decided for, which
//! [`Limiter::subjects`](crate::Limiter::subjects) pages through once
//! [`Limiter::track_subjects`](crate::Limiter::track_subjects) has turned it on. Noted on the
//! decision path (the limiter's shared state holds it), read by `subjects.rs`.

use std::collections::HashMap;

use parking_lot::Mutex;

/// The attribute values of each partition seen, by rule id and partition hash.
type PartitionValues = HashMap<(u32, u128), Box<[Box<str>]>>;

/// One partition of a rule: its cursor key, its hash and its attribute values.
pub(crate) type RulePartition = (String, u128, Box<[Box<str>]>);

const SHARDS: usize = 16;

/// The partitions a limiter has decided for, per rule, bounded.
pub(crate) struct SubjectIndex {
    max_per_rule: usize,
    shards: Box<[Mutex<PartitionValues>]>,
    counts: Mutex<HashMap<u32, usize>>,
}

impl SubjectIndex {
    pub(crate) fn new(max_per_rule: usize) -> Self {
        SubjectIndex {
            max_per_rule,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, partition_hash: u128) -> &Mutex<PartitionValues> {
        // The partition hash is a keyed hash already: its low bits spread evenly.
        let i = usize::try_from(partition_hash % SHARDS as u128).unwrap_or(0);
        &self.shards[i]
    }

    /// Notes that rule `rule_id` decided for the partition `values` (hash `ph`).
    #[inline]
    pub(crate) fn note(&self, rule_id: u32, ph: u128, values: &[&str]) {
        let mut shard = self.shard(ph).lock();
        if shard.contains_key(&(rule_id, ph)) {
            return;
        }
        {
            let mut counts = self.counts.lock();
            let n = counts.entry(rule_id).or_insert(0);
            if *n >= self.max_per_rule {
                metrics::counter!("tollgate_subject_index_full_total").increment(1);
                return;
            }
            *n += 1;
        }
        shard.insert(
            (rule_id, ph),
            values.iter().map(|v| Box::from(*v)).collect(),
        );
    }

    /// The noted partitions of rule `rule_id` with their cursors, in cursor order.
    pub(crate) fn of_rule(&self, rule_id: u32) -> Vec<RulePartition> {
        let mut out: Vec<RulePartition> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .iter()
                    .filter(|((r, _), _)| *r == rule_id)
                    .map(|((_, ph), v)| (cursor_of(v), *ph, v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// How many partitions of rule `rule_id` are noted.
    pub(crate) fn tracked(&self, rule_id: u32) -> usize {
        self.counts.lock().get(&rule_id).copied().unwrap_or(0)
    }

    pub(crate) fn forget(&self, rule_id: u32, ph: u128) {
        if self.shard(ph).lock().remove(&(rule_id, ph)).is_some() {
            if let Some(n) = self.counts.lock().get_mut(&rule_id) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// The cursor of a subject: its values, each length-prefixed, so that no value can forge
/// another.
pub(crate) fn cursor_of(values: &[Box<str>]) -> String {
    values
        .iter()
        .map(|v| format!("{}:{v}", v.len()))
        .collect::<Vec<_>>()
        .join(",")
}
