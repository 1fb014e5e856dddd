//! Which cached objects a purge selects. Pingora purges single keys only, so the cache keeps
//! its own index: readable key (`host/path?query`) → object, ordered so that prefix and host
//! purges are range scans, and surrogate tag → keys. The storage updates it as objects enter
//! and leave; each entry carries the generation of the object it indexes, so a late eviction
//! notice for an old copy cannot remove the entry of its replacement.
//!
//! The [`PurgeLog`] remembers which purges this node applied and when, so that a fill older
//! than a purge (a lagging parent tier still holding the old copy) is not stored again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora_cache::key::HashBinary;

/// What a purge names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One object, by readable key (`host/path?query`).
    Url(String),
    /// Every key starting with this (`host/live/abc/`).
    Prefix(String),
    /// Every key of a host.
    Host(String),
    /// Every object whose `Surrogate-Key` header lists this tag.
    Tag(String),
    /// Everything.
    All,
}

impl Selector {
    /// Whether an object with readable key `key` and surrogate `tags` is selected.
    pub fn matches(&self, key: &str, tags: &[String]) -> bool {
        match self {
            Self::Url(url) => key == url,
            Self::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Self::Host(host) => key
                .strip_prefix(host.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
            Self::Tag(tag) => tags.iter().any(|t| t == tag),
            Self::All => true,
        }
    }
}

/// Splits a `Surrogate-Key` header value into tags.
pub fn surrogate_tags(header: Option<&str>) -> Vec<String> {
    header
        .map(|v| v.split_ascii_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Response header carrying when an object was first fetched from the origin (Unix
/// milliseconds). The first tier that fetches from the origin sets it; later tiers keep it.
pub const FETCHED_HEADER: &str = "x-cascade-fetched";

/// How long applied purges are remembered; a parent tier lagging longer than this could still
/// hand back a purged copy.
pub const PURGE_MEMORY: Duration = Duration::from_secs(3600);

/// Most purges remembered; the oldest are forgotten first.
const PURGE_LOG_CAPACITY: usize = 100_000;

/// Purges applied by this node, newest last.
#[derive(Debug, Default)]
pub struct PurgeLog {
    applied: VecDeque<(SystemTime, Selector)>,
}

impl PurgeLog {
    /// Records a purge that takes effect from `at` (when the bus accepted it), as applied at
    /// `now`. What is older than [`PURGE_MEMORY`] is not (or no longer) remembered.
    pub fn record(&mut self, selector: Selector, at: SystemTime, now: SystemTime) {
        let horizon = now.checked_sub(PURGE_MEMORY).unwrap_or(UNIX_EPOCH);
        if at >= horizon {
            self.applied.push_back((at.min(now), selector));
        }
        while self.applied.len() > PURGE_LOG_CAPACITY {
            self.applied.pop_front();
        }
        while self.applied.front().is_some_and(|(t, _)| *t < horizon) {
            self.applied.pop_front();
        }
    }

    /// When the newest remembered purge matching this object took effect, if any.
    pub fn newest_matching(&self, key: &str, tags: &[String]) -> Option<SystemTime> {
        self.applied
            .iter()
            .filter(|(_, s)| s.matches(key, tags))
            .map(|(t, _)| *t)
            .max()
    }

    /// True when a copy first fetched at `fetched` predates a purge that names it.
    pub fn is_stale(&self, key: &str, tags: &[String], fetched: SystemTime) -> bool {
        self.newest_matching(key, tags)
            .is_some_and(|purged| fetched < purged)
    }

    /// True when nothing is remembered (the common case: skip all checks).
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

/// Parses a [`FETCHED_HEADER`] value.
pub fn parse_fetched(value: &str) -> Option<SystemTime> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// Formats a time for [`FETCHED_HEADER`].
pub fn format_fetched(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string()
}

#[derive(Debug, Clone)]
struct Entry {
    id: HashBinary,
    generation: u64,
    tags: Vec<String>,
}

/// The index of complete objects.
#[derive(Debug, Default)]
pub struct PurgeIndex {
    by_key: BTreeMap<String, Entry>,
    by_tag: HashMap<String, BTreeSet<String>>,
}

impl PurgeIndex {
    /// Records that `key` now holds the object `id` of `generation` with `tags`.
    pub fn insert(&mut self, key: &str, id: HashBinary, generation: u64, tags: &[String]) {
        if let Some(old) = self.by_key.insert(
            key.to_owned(),
            Entry {
                id,
                generation,
                tags: tags.to_vec(),
            },
        ) {
            self.untag(key, &old.tags);
        }
        for tag in tags {
            self.by_tag
                .entry(tag.clone())
                .or_default()
                .insert(key.to_owned());
        }
    }

    /// Forgets `key` if it still indexes `generation`.
    pub fn remove(&mut self, key: &str, generation: u64) {
        if self
            .by_key
            .get(key)
            .is_some_and(|e| e.generation == generation)
            && let Some(old) = self.by_key.remove(key)
        {
            self.untag(key, &old.tags);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_tag.clear();
    }

    /// Objects indexed.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The objects `selector` names.
    pub fn select(&self, selector: &Selector) -> Vec<HashBinary> {
        match selector {
            Selector::Url(url) => self.by_key.get(url).map(|e| e.id).into_iter().collect(),
            Selector::Prefix(prefix) => self.scan(prefix).collect(),
            Selector::Host(host) => self.scan(&format!("{host}/")).collect(),
            Selector::Tag(tag) => self
                .by_tag
                .get(tag)
                .into_iter()
                .flatten()
                .filter_map(|key| self.by_key.get(key).map(|e| e.id))
                .collect(),
            Selector::All => self.by_key.values().map(|e| e.id).collect(),
        }
    }

    /// How many objects `selector` names.
    pub fn count(&self, selector: &Selector) -> usize {
        match selector {
            Selector::Url(url) => usize::from(self.by_key.contains_key(url)),
            Selector::Prefix(prefix) => self.scan(prefix).count(),
            Selector::Host(host) => self.scan(&format!("{host}/")).count(),
            Selector::Tag(tag) => self.by_tag.get(tag).map_or(0, BTreeSet::len),
            Selector::All => self.by_key.len(),
        }
    }

    fn scan<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = HashBinary> + 'a {
        self.by_key
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.id)
    }

    fn untag(&mut self, key: &str, tags: &[String]) {
        for tag in tags {
            if let Some(keys) = self.by_tag.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> HashBinary {
        [n; 16]
    }

    fn index() -> PurgeIndex {
        let mut i = PurgeIndex::default();
        let tags = |s: &str| surrogate_tags(Some(s));
        i.insert(
            "cdn.a/live/s1/720p/1.m4s",
            id(1),
            1,
            &tags("stream/s1 rendition/s1/720p"),
        );
        i.insert(
            "cdn.a/live/s1/720p/playlist.m3u8",
            id(2),
            1,
            &tags("stream/s1 rendition/s1/720p"),
        );
        i.insert("cdn.a/live/s10/720p/1.m4s", id(3), 1, &tags("stream/s10"));
        i.insert("cdn.b/live/s1/720p/1.m4s", id(4), 1, &tags("stream/s1"));
        i.insert("cdn.ab/x", id(5), 1, &[]);
        i
    }

    fn sorted(mut v: Vec<HashBinary>) -> Vec<HashBinary> {
        v.sort();
        v
    }

    #[test]
    fn each_kind_selects_what_it_names() {
        let i = index();
        assert_eq!(
            i.select(&Selector::Url("cdn.a/live/s1/720p/1.m4s".into())),
            [id(1)]
        );
        assert_eq!(
            sorted(i.select(&Selector::Prefix("cdn.a/live/s1/".into()))),
            [id(1), id(2)],
            "s10 is not under s1/"
        );
        assert_eq!(
            sorted(i.select(&Selector::Host("cdn.a".into()))),
            [id(1), id(2), id(3)],
            "cdn.ab is another host"
        );
        assert_eq!(
            sorted(i.select(&Selector::Tag("stream/s1".into()))),
            [id(1), id(2), id(4)]
        );
        assert_eq!(i.select(&Selector::All).len(), 5);
        assert!(i.select(&Selector::Url("cdn.a/nope".into())).is_empty());
    }

    #[test]
    fn a_stale_removal_does_not_drop_a_replacement() {
        let mut i = index();
        i.insert(
            "cdn.a/live/s1/720p/1.m4s",
            id(9),
            2,
            &surrogate_tags(Some("stream/new")),
        );
        i.remove("cdn.a/live/s1/720p/1.m4s", 1);
        assert_eq!(
            i.select(&Selector::Url("cdn.a/live/s1/720p/1.m4s".into())),
            [id(9)]
        );
        assert_eq!(
            sorted(i.select(&Selector::Tag("stream/s1".into()))),
            [id(2), id(4)],
            "old tags are gone"
        );
        assert_eq!(i.select(&Selector::Tag("stream/new".into())), [id(9)]);
        i.remove("cdn.a/live/s1/720p/1.m4s", 2);
        assert!(i.select(&Selector::Tag("stream/new".into())).is_empty());
        assert_eq!(i.len(), 4);
    }

    #[test]
    fn the_log_flags_copies_older_than_a_matching_purge() {
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let mut log = PurgeLog::default();
        assert!(log.is_empty());
        log.record(Selector::Prefix("a.tv/live/s1/".into()), t(100), t(100));
        log.record(Selector::Tag("vod/x".into()), t(200), t(201));
        assert!(
            log.is_stale("a.tv/live/s1/1.m4s", &[], t(99)),
            "fetched before the purge"
        );
        assert!(
            !log.is_stale("a.tv/live/s1/1.m4s", &[], t(101)),
            "fetched after it"
        );
        assert!(
            !log.is_stale("a.tv/live/s2/1.m4s", &[], t(0)),
            "not named by any purge"
        );
        assert!(log.is_stale("b.tv/v/1.m4s", &surrogate_tags(Some("vod/x")), t(150)));
        assert_eq!(log.newest_matching("a.tv/live/s1/x", &[]), Some(t(100)));
        let later = t(100 + PURGE_MEMORY.as_secs() + 1);
        log.record(Selector::All, later, later);
        assert_eq!(
            log.applied.len(),
            2,
            "purges older than the memory are forgotten"
        );
        log.record(Selector::Host("c.tv".into()), t(50), later);
        assert_eq!(
            log.applied.len(),
            2,
            "a replayed old purge is not remembered"
        );
        log.record(Selector::Host("c.tv".into()), t(300), later);
        log.record(Selector::Host("c.tv".into()), t(250), later);
        assert_eq!(
            log.newest_matching("c.tv/a", &[]),
            Some(later),
            "the newest time wins whatever the arrival order"
        );
        assert!(!log.is_stale("c.tv/a", &[], later));
        assert_eq!(parse_fetched(&format_fetched(t(5))), Some(t(5)));
        assert_eq!(parse_fetched("soon"), None);
    }

    #[test]
    fn matching_single_objects_agrees_with_the_index() {
        let tags = surrogate_tags(Some("stream/s1"));
        assert!(Selector::Host("cdn.a".into()).matches("cdn.a/x", &tags));
        assert!(!Selector::Host("cdn.a".into()).matches("cdn.ab/x", &tags));
        assert!(Selector::Prefix("cdn.a/live/".into()).matches("cdn.a/live/x", &tags));
        assert!(Selector::Tag("stream/s1".into()).matches("anything", &tags));
        assert!(!Selector::Tag("stream/s2".into()).matches("anything", &tags));
        assert!(Selector::All.matches("x", &[]));
    }
}
