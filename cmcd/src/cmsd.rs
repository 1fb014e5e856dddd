//! Common Media Server Data (CTA-5006), sans IO: what the servers on a response's path tell
//! the player and the tiers below them.
//!
//! - `CMSD-Static` (set once, by the origin, and cached with the object): object type, format,
//!   stream type, duration and bitrate, plus the custom key [`OBJECT_TIME_KEY`], the wall-clock
//!   time of the object's first sample, from which an edge computes viewers' live latency.
//! - `CMSD-Dynamic` (added per response by every tier, nearest the player first): the tier's
//!   id with its estimated throughput to the client (`etp`, kbit/s), the round-trip time
//!   (`rtt`, ms) and how long the response was held before its first byte (`rd`, ms: a
//!   blocking playlist reload or a part not yet produced).

use std::fmt::Write as _;

use crate::{ObjectType, StreamType, StreamingFormat};

/// Custom `CMSD-Static` key: Unix ms of the object's first sample (its program date time).
pub const OBJECT_TIME_KEY: &str = "com.cascade-pdt";

/// What the origin says about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticData {
    /// `ot`.
    pub object_type: Option<ObjectType>,
    /// `sf`.
    pub format: Option<StreamingFormat>,
    /// `st`.
    pub stream_type: Option<StreamType>,
    /// `d`: duration, ms.
    pub duration_ms: Option<u64>,
    /// `br`: encoded bitrate, kbit/s.
    pub bitrate_kbps: Option<u64>,
    /// [`OBJECT_TIME_KEY`]: Unix ms of the first sample.
    pub object_time_ms: Option<u64>,
}

impl StaticData {
    /// The header value (keys in the order CTA-5006 lists them, custom key last).
    pub fn header_value(&self) -> String {
        let mut items: Vec<String> = Vec::new();
        if let Some(br) = self.bitrate_kbps {
            items.push(format!("br={br}"));
        }
        if let Some(d) = self.duration_ms {
            items.push(format!("d={d}"));
        }
        if let Some(ot) = self.object_type {
            items.push(format!("ot={}", ot.token()));
        }
        if let Some(sf) = self.format {
            items.push(format!(
                "sf={}",
                match sf {
                    StreamingFormat::Dash => "d",
                    StreamingFormat::Hls => "h",
                    StreamingFormat::Smooth => "s",
                    StreamingFormat::Other => "o",
                }
            ));
        }
        if let Some(st) = self.stream_type {
            items.push(format!(
                "st={}",
                match st {
                    StreamType::Vod => "v",
                    StreamType::Live => "l",
                }
            ));
        }
        if let Some(t) = self.object_time_ms {
            items.push(format!("{OBJECT_TIME_KEY}={t}"));
        }
        items.join(",")
    }
}

/// The object time a `CMSD-Static` value carries, if any.
pub fn object_time_ms(static_value: &str) -> Option<i64> {
    static_value.split(',').find_map(|item| {
        let (key, value) = item.trim().split_once('=')?;
        (key == OBJECT_TIME_KEY)
            .then(|| value.parse::<i64>().ok())
            .flatten()
            .filter(|t| *t > 0)
    })
}

/// What one tier says about one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicEntry<'a> {
    /// The tier's id (its node id).
    pub server: &'a str,
    /// `etp`: estimated throughput to the client, kbit/s.
    pub estimated_throughput_kbps: Option<u64>,
    /// `rtt`: round-trip time to the client, ms.
    pub rtt_ms: Option<u64>,
    /// `rd`: from the request to the response header, ms.
    pub response_delay_ms: Option<u64>,
}

impl DynamicEntry<'_> {
    /// This entry put in front of the entries of the tiers above (`upstream`, the value the
    /// response arrived with). A server id with characters a structured-field string cannot
    /// hold has them replaced by `_`.
    pub fn prepend_to(&self, upstream: Option<&str>) -> String {
        let upstream = upstream.map(str::trim).filter(|u| !u.is_empty());
        let mut out =
            String::with_capacity(self.server.len() + 40 + upstream.map_or(0, |u| u.len() + 2));
        out.push('"');
        out.extend(self.server.chars().map(|c| {
            if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        }));
        out.push('"');
        // Writing into a String cannot fail.
        if let Some(etp) = self.estimated_throughput_kbps {
            let _ = write!(out, ";etp={etp}");
        }
        if let Some(rtt) = self.rtt_ms {
            let _ = write!(out, ";rtt={rtt}");
        }
        if let Some(rd) = self.response_delay_ms {
            let _ = write!(out, ";rd={rd}");
        }
        if let Some(upstream) = upstream {
            out.push_str(", ");
            out.push_str(upstream);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_data_is_a_dictionary_with_the_object_time_last() {
        let data = StaticData {
            object_type: Some(ObjectType::Video),
            format: Some(StreamingFormat::Hls),
            stream_type: Some(StreamType::Live),
            duration_ms: Some(500),
            bitrate_kbps: Some(2_800),
            object_time_ms: Some(1_765_000_000_123),
        };
        let value = data.header_value();
        assert_eq!(
            value,
            "br=2800,d=500,ot=v,sf=h,st=l,com.cascade-pdt=1765000000123"
        );
        assert_eq!(object_time_ms(&value), Some(1_765_000_000_123));
        assert_eq!(object_time_ms("ot=m,st=l"), None);
        assert_eq!(object_time_ms("com.cascade-pdt=abc"), None);
        assert_eq!(StaticData::default().header_value(), "");
    }

    #[test]
    fn each_tier_puts_its_entry_first() {
        let shield = DynamicEntry {
            server: "shield-1",
            response_delay_ms: Some(180),
            ..DynamicEntry::default()
        };
        let from_shield = shield.prepend_to(None);
        assert_eq!(from_shield, "\"shield-1\";rd=180");
        let edge = DynamicEntry {
            server: "edge \"west\"",
            estimated_throughput_kbps: Some(25_000),
            rtt_ms: Some(12),
            response_delay_ms: Some(3),
        };
        assert_eq!(
            edge.prepend_to(Some(&from_shield)),
            "\"edge _west_\";etp=25000;rtt=12;rd=3, \"shield-1\";rd=180"
        );
    }
}
