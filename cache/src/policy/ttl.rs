//! How long a response may be served from cache.
//!
//! The upstream's `Cache-Control` wins (`s-maxage` over `max-age`; `no-store` and `private`
//! are never stored); without it, a content-aware default applies: live playlists and MPDs a
//! moment, blocking-reload playlist answers a few target durations (the answer for a given
//! `_HLS_msn`/`_HLS_part` never changes), media and init segments long, 404s briefly, server
//! errors never. A response's `Age` (a parent tier's hit) counts against its freshness, so a
//! playlist is never fresher at the edge than the origin allowed. Live playlists are not
//! served stale while they are refreshed: a stale live playlist is latency for every viewer,
//! and collapsing already keeps the refresh to one upstream request.

use std::time::Duration;

/// What kind of object a request is for, judged from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentClass {
    /// A live media playlist or MPD, re-requested every part/segment.
    Playlist,
    /// A playlist requested with `_HLS_msn` (blocking reload): its content is final.
    BlockingPlaylist,
    /// Segments, parts, init segments, thumbnails.
    Media,
    /// Anything else.
    Other,
}

impl ContentClass {
    /// Classifies by extension and the keyed query.
    pub fn of(path: &str, keyed_query: &str) -> Self {
        let ext = path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "m3u8" | "mpd" if keyed_query.contains("_HLS_msn=") => Self::BlockingPlaylist,
            "m3u8" | "mpd" => Self::Playlist,
            "m4s" | "mp4" | "m4a" | "m4v" | "ts" | "aac" | "cmfv" | "cmfa" | "vtt" | "webvtt"
            | "jpg" | "jpeg" | "png" => Self::Media,
            _ => Self::Other,
        }
    }

    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Playlist => "playlist",
            Self::BlockingPlaylist => "blocking_playlist",
            Self::Media => "media",
            Self::Other => "other",
        }
    }
}

/// Default lifetimes when the upstream says nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Live playlists and MPDs.
    pub playlist: Duration,
    /// Blocking-reload playlist answers.
    pub blocking_playlist: Duration,
    /// Media, init segments, thumbnails.
    pub media: Duration,
    /// Other successful responses.
    pub other: Duration,
    /// 404 and 410 answers.
    pub not_found: Duration,
    /// How long a stale object may be served while it is refreshed in the background.
    pub stale_while_revalidate: Duration,
    /// The same for live playlists and MPDs when the upstream does not say.
    pub playlist_stale_while_revalidate: Duration,
    /// How long a stale object may be served when the upstream fails.
    pub stale_if_error: Duration,
    /// Cap on stale-if-error for live playlists, so players do not freeze on a dead live edge.
    pub playlist_stale_if_error: Duration,
    /// Cap on a live playlist's freshness: a player joining from a cached copy starts that much
    /// behind the live edge, and `max-age` cannot say less than a second. The default,
    /// [`LIVE_PLAYLIST_LIFETIME`], caps nothing.
    pub live_playlist_fresh: Duration,
}

/// A playlist or MPD the upstream keeps fresh for less than this is a live one (a finished
/// recording's is kept for hours).
pub const LIVE_PLAYLIST_LIFETIME: Duration = Duration::from_secs(60);

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            playlist: Duration::from_secs(1),
            blocking_playlist: Duration::from_secs(12),
            media: Duration::from_secs(24 * 3600),
            other: Duration::from_secs(60),
            not_found: Duration::from_secs(2),
            stale_while_revalidate: Duration::from_secs(2),
            playlist_stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(300),
            playlist_stale_if_error: Duration::from_secs(6),
            live_playlist_fresh: LIVE_PLAYLIST_LIFETIME,
        }
    }
}

/// `Cache-Control` directives that matter to a shared cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `private`.
    pub private: bool,
    /// `no-cache` (store, but revalidate every time).
    pub no_cache: bool,
    /// `max-age`.
    pub max_age: Option<u64>,
    /// `s-maxage` (wins over `max-age` in a shared cache).
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate`.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error`.
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// Parses every `Cache-Control` value of a response; unknown directives are ignored and a
    /// malformed number makes that directive absent.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = Self::default();
        for value in values {
            for item in value.split(',') {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let secs = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "private" => d.private = true,
                    "no-cache" => d.no_cache = true,
                    "max-age" => d.max_age = secs(),
                    "s-maxage" => d.s_maxage = secs(),
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }
}

/// The verdict for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Do not store; the reason is for logs.
    Uncacheable(&'static str),
    /// Store, fresh for `fresh`, then servable stale for the given windows.
    Cacheable {
        /// Freshness lifetime.
        fresh: Duration,
        /// Stale-while-revalidate window after `fresh`.
        stale_while_revalidate: Duration,
        /// Stale-if-error window after `fresh`.
        stale_if_error: Duration,
    },
}

impl TtlPolicy {
    /// Decides for a response with `status` to a request of `class`, `age` old already
    /// (its `Age` header).
    pub fn decide(
        &self,
        class: ContentClass,
        status: u16,
        d: &Directives,
        age: Duration,
    ) -> Decision {
        if d.no_store || d.private {
            return Decision::Uncacheable("upstream said no-store or private");
        }
        let default = match status {
            200 | 203 | 204 | 206 | 300 | 301 | 308 => Some(match class {
                ContentClass::Playlist => self.playlist,
                ContentClass::BlockingPlaylist => self.blocking_playlist,
                ContentClass::Media => self.media,
                ContentClass::Other => self.other,
            }),
            404 | 410 => Some(self.not_found),
            _ => None,
        };
        let explicit = d.s_maxage.or(d.max_age).map(Duration::from_secs);
        let fresh = if d.no_cache {
            Some(Duration::ZERO)
        } else {
            explicit.or(default).map(|f| f.saturating_sub(age))
        };
        let Some(fresh) = fresh else {
            return Decision::Uncacheable("status is not cacheable by default");
        };
        let live = class == ContentClass::Playlist;
        let fresh = if live && fresh < LIVE_PLAYLIST_LIFETIME {
            fresh.min(self.live_playlist_fresh)
        } else {
            fresh
        };
        // Upstream-given stale windows win; otherwise the policy's, with live playlists capped.
        let sie_default = if live {
            self.playlist_stale_if_error
        } else {
            self.stale_if_error
        };
        let stale_if_error = d
            .stale_if_error
            .map(Duration::from_secs)
            .unwrap_or(sie_default);
        let stale_if_error = if live {
            stale_if_error.min(self.playlist_stale_if_error)
        } else {
            stale_if_error
        };
        Decision::Cacheable {
            fresh,
            stale_while_revalidate: d.stale_while_revalidate.map(Duration::from_secs).unwrap_or(
                if live {
                    self.playlist_stale_while_revalidate
                } else if matches!(status, 404 | 410) {
                    // A missing object may appear any moment (a live part asked for early).
                    Duration::ZERO
                } else {
                    self.stale_while_revalidate
                },
            ),
            stale_if_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(decision: Decision) -> Duration {
        match decision {
            Decision::Cacheable { fresh, .. } => fresh,
            Decision::Uncacheable(why) => panic!("uncacheable: {why}"),
        }
    }

    #[test]
    fn classes_from_paths() {
        assert_eq!(
            ContentClass::of("/live/a/720p/playlist.m3u8", ""),
            ContentClass::Playlist
        );
        assert_eq!(
            ContentClass::of("/live/a/720p/playlist.m3u8", "_HLS_msn=4&_HLS_part=1"),
            ContentClass::BlockingPlaylist
        );
        assert_eq!(
            ContentClass::of("/live/a/manifest.mpd", ""),
            ContentClass::Playlist
        );
        assert_eq!(
            ContentClass::of("/live/a/720p/12.3.m4s", ""),
            ContentClass::Media
        );
        assert_eq!(
            ContentClass::of("/live/a/720p/init.MP4", ""),
            ContentClass::Media
        );
        assert_eq!(
            ContentClass::of("/live/a/thumbnail.jpg", ""),
            ContentClass::Media
        );
        assert_eq!(ContentClass::of("/", ""), ContentClass::Other);
    }

    #[test]
    fn age_counts_against_freshness() {
        let p = TtlPolicy::default();
        let d = Directives::parse(["public, max-age=10"]);
        let aged = |secs| fresh(p.decide(ContentClass::Other, 200, &d, Duration::from_secs(secs)));
        assert_eq!(aged(0), Duration::from_secs(10));
        assert_eq!(aged(4), Duration::from_secs(6));
        // Older than its lifetime: stored, but stale at once (the next request refetches).
        assert_eq!(aged(30), Duration::ZERO);
        let defaulted = fresh(p.decide(
            ContentClass::Media,
            200,
            &Directives::default(),
            Duration::from_secs(60),
        ));
        assert_eq!(defaulted, p.media - Duration::from_secs(60));
    }

    #[test]
    fn live_playlists_are_not_served_stale_while_refreshing_unless_the_upstream_says() {
        let p = TtlPolicy::default();
        let swr = |class, cc: &str| match p.decide(
            class,
            200,
            &Directives::parse([cc]),
            Duration::ZERO,
        ) {
            Decision::Cacheable {
                stale_while_revalidate,
                ..
            } => stale_while_revalidate,
            Decision::Uncacheable(why) => panic!("uncacheable: {why}"),
        };
        assert_eq!(swr(ContentClass::Playlist, "max-age=1"), Duration::ZERO);
        assert_eq!(
            swr(ContentClass::Media, "max-age=1"),
            p.stale_while_revalidate
        );
        let not_found = match p.decide(
            ContentClass::Media,
            404,
            &Directives::parse(["max-age=1"]),
            Duration::ZERO,
        ) {
            Decision::Cacheable {
                stale_while_revalidate,
                ..
            } => stale_while_revalidate,
            Decision::Uncacheable(why) => panic!("uncacheable: {why}"),
        };
        assert_eq!(not_found, Duration::ZERO, "a 404 is not served stale");
        assert_eq!(
            swr(
                ContentClass::Playlist,
                "max-age=1, stale-while-revalidate=3"
            ),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn defaults_by_class_and_status() {
        let p = TtlPolicy::default();
        let none = Directives::default();
        assert_eq!(
            fresh(p.decide(ContentClass::Playlist, 200, &none, Duration::ZERO)),
            p.playlist.min(p.live_playlist_fresh)
        );
        assert_eq!(
            fresh(p.decide(ContentClass::BlockingPlaylist, 200, &none, Duration::ZERO)),
            p.blocking_playlist
        );
        assert_eq!(
            fresh(p.decide(ContentClass::Media, 200, &none, Duration::ZERO)),
            p.media
        );
        assert_eq!(
            fresh(p.decide(ContentClass::Media, 404, &none, Duration::ZERO)),
            p.not_found
        );
        assert!(matches!(
            p.decide(ContentClass::Media, 500, &none, Duration::ZERO),
            Decision::Uncacheable(_)
        ));
        assert!(matches!(
            p.decide(ContentClass::Media, 503, &none, Duration::ZERO),
            Decision::Uncacheable(_)
        ));
    }

    #[test]
    fn a_live_playlist_is_fresh_for_a_fraction_of_a_second_whatever_max_age_says() {
        let p = TtlPolicy {
            live_playlist_fresh: Duration::from_millis(250),
            ..TtlPolicy::default()
        };
        let max_age = |secs: u64| Directives {
            max_age: Some(secs),
            ..Directives::default()
        };
        // The origin's `max-age=1` (its least) would let a joining viewer start a second late.
        assert_eq!(
            fresh(p.decide(ContentClass::Playlist, 200, &max_age(1), Duration::ZERO)),
            Duration::from_millis(250)
        );
        assert_eq!(
            fresh(p.decide(ContentClass::Playlist, 200, &max_age(3), Duration::ZERO)),
            Duration::from_millis(250)
        );
        // A finished recording's playlist, blocking-reload answers and media keep theirs.
        assert_eq!(
            fresh(p.decide(
                ContentClass::Playlist,
                200,
                &max_age(86_400),
                Duration::ZERO
            )),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            fresh(p.decide(
                ContentClass::BlockingPlaylist,
                200,
                &max_age(6),
                Duration::ZERO
            )),
            Duration::from_secs(6)
        );
        assert_eq!(
            fresh(p.decide(ContentClass::Media, 200, &max_age(1), Duration::ZERO)),
            Duration::from_secs(1)
        );
        // The default: no cap.
        let off = TtlPolicy::default();
        assert_eq!(
            fresh(off.decide(ContentClass::Playlist, 200, &max_age(1), Duration::ZERO)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn upstream_cache_control_overrides() {
        let p = TtlPolicy::default();
        let cc = |v: &str| Directives::parse([v]);
        assert_eq!(
            fresh(p.decide(
                ContentClass::Media,
                200,
                &cc("public, max-age=31536000, immutable"),
                Duration::ZERO
            )),
            Duration::from_secs(31_536_000)
        );
        assert_eq!(
            fresh(p.decide(
                ContentClass::Other,
                200,
                &cc("max-age=10, s-maxage=1"),
                Duration::ZERO
            )),
            Duration::from_secs(1)
        );
        assert_eq!(
            fresh(p.decide(ContentClass::Media, 200, &cc("no-cache"), Duration::ZERO)),
            Duration::ZERO
        );
        assert!(matches!(
            p.decide(ContentClass::Media, 200, &cc("no-store"), Duration::ZERO),
            Decision::Uncacheable(_)
        ));
        assert!(matches!(
            p.decide(
                ContentClass::Media,
                200,
                &cc("Private, max-age=9"),
                Duration::ZERO
            ),
            Decision::Uncacheable(_)
        ));
        assert_eq!(
            fresh(p.decide(ContentClass::Media, 500, &cc("max-age=5"), Duration::ZERO)),
            Duration::from_secs(5),
            "explicit caching of an error is honoured"
        );
        assert_eq!(
            fresh(p.decide(ContentClass::Media, 200, &cc("max-age=abc"), Duration::ZERO)),
            p.media,
            "a malformed number falls back to the default"
        );
    }

    #[test]
    fn stale_windows_and_the_live_playlist_cap() {
        let p = TtlPolicy::default();
        let d = Directives::parse(["max-age=1, stale-while-revalidate=7, stale-if-error=3600"]);
        match p.decide(ContentClass::Media, 200, &d, Duration::ZERO) {
            Decision::Cacheable {
                stale_while_revalidate,
                stale_if_error,
                ..
            } => {
                assert_eq!(
                    (stale_while_revalidate, stale_if_error),
                    (Duration::from_secs(7), Duration::from_secs(3600))
                );
            }
            other => panic!("{other:?}"),
        }
        match p.decide(ContentClass::Playlist, 200, &d, Duration::ZERO) {
            Decision::Cacheable { stale_if_error, .. } => {
                assert_eq!(stale_if_error, p.playlist_stale_if_error)
            }
            other => panic!("{other:?}"),
        }
    }
}
