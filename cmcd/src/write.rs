//! Writing CMCD as a player does: the key list in the order CTA-5004 asks (alphabetical), and
//! the `CMCD=` query parameter that carries it.

use crate::{Cmcd, StreamType, StreamingFormat};

impl StreamingFormat {
    /// The token written after `sf=`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Dash => "d",
            Self::Hls => "h",
            Self::Smooth => "s",
            Self::Other => "o",
        }
    }
}

impl StreamType {
    /// The token written after `st=`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Vod => "v",
            Self::Live => "l",
        }
    }
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Cmcd {
    /// The comma-separated key list, keys in alphabetical order; `false` booleans and absent
    /// values are left out, as the specification asks.
    pub fn to_list(&self) -> String {
        let mut items: Vec<(&str, Option<String>)> = Vec::new();
        let mut number = |key, value: Option<u64>| {
            if let Some(v) = value {
                items.push((key, Some(v.to_string())));
            }
        };
        number("bl", self.buffer_length_ms);
        number("br", self.bitrate_kbps);
        number("d", self.object_duration_ms);
        number("dl", self.deadline_ms);
        number("mtp", self.measured_throughput_kbps);
        number("rtp", self.requested_throughput_kbps);
        number("tb", self.top_bitrate_kbps);
        if self.buffer_starvation {
            items.push(("bs", None));
        }
        if self.startup {
            items.push(("su", None));
        }
        if let Some(cid) = &self.content_id {
            items.push(("cid", Some(quoted(cid))));
        }
        if let Some(sid) = &self.session_id {
            items.push(("sid", Some(quoted(sid))));
        }
        if let Some(nor) = &self.next_object {
            items.push(("nor", Some(quoted(nor))));
        }
        if let Some(ot) = self.object_type {
            items.push(("ot", Some(ot.token().to_owned())));
        }
        if let Some(pr) = self
            .playback_rate
            .filter(|r| (*r - 1.0).abs() > f64::EPSILON)
        {
            items.push(("pr", Some(format!("{pr}"))));
        }
        if let Some(sf) = self.streaming_format {
            items.push(("sf", Some(sf.token().to_owned())));
        }
        if let Some(st) = self.stream_type {
            items.push(("st", Some(st.token().to_owned())));
        }
        if let Some(v) = self.version.filter(|v| *v != 1) {
            items.push(("v", Some(v.to_string())));
        }
        items.sort_by(|a, b| a.0.cmp(b.0));
        items
            .into_iter()
            .map(|(key, value)| match value {
                Some(v) => format!("{key}={v}"),
                None => key.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `CMCD=<list>`, percent-encoded for a query string.
    pub fn to_query(&self) -> String {
        let mut out = String::from("CMCD=");
        for byte in self.to_list().bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cmcd, ObjectType, StreamType, StreamingFormat, from_request};

    #[test]
    fn what_is_written_reads_back_the_same() {
        let cmcd = Cmcd {
            buffer_length_ms: Some(1800),
            bitrate_kbps: Some(3200),
            object_duration_ms: Some(333),
            measured_throughput_kbps: Some(25_000),
            top_bitrate_kbps: Some(3200),
            buffer_starvation: true,
            startup: true,
            content_id: Some("stream \"1\"".into()),
            session_id: Some("6e2fb550-c457-11e9".into()),
            next_object: Some("12.3.m4s".into()),
            object_type: Some(ObjectType::Video),
            streaming_format: Some(StreamingFormat::Hls),
            stream_type: Some(StreamType::Live),
            ..Cmcd::default()
        };
        let list = cmcd.to_list();
        let keys: Vec<&str> = list
            .split(',')
            .map(|item| item.split('=').next().unwrap_or(""))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "{list}");
        let query = cmcd.to_query();
        assert!(!query[5..].contains([',', '=', '"', ' ']), "{query}");
        let read = from_request(Some(&query), std::iter::empty()).expect("CMCD read back");
        assert_eq!(read, cmcd);
    }

    #[test]
    fn false_and_default_values_are_left_out() {
        let cmcd = Cmcd {
            playback_rate: Some(1.0),
            version: Some(1),
            object_type: Some(ObjectType::Manifest),
            ..Cmcd::default()
        };
        assert_eq!(cmcd.to_list(), "ot=m");
    }
}
