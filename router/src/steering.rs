//! Content steering (HLS `EXT-X-CONTENT-STEERING`, DASH `<ContentSteering>`): the router
//! rewrites a stream's multivariant playlist or MPD so that every PoP is a pathway with its
//! own absolute URLs, and answers the steering manifest that orders those pathways for one
//! viewer. A playing viewer then moves to another PoP without reloading.

use std::fmt::Write as _;

use serde::Serialize;

/// One pathway: a PoP id and the base URL of its edge for this stream, e.g.
/// `http://edge-a:8000/t/<token>/live/abc/` (ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pathway {
    /// The PoP id (`PATHWAY-ID`, `serviceLocation`).
    pub id: String,
    /// Where relative URIs of the playlist resolve on that PoP's edge.
    pub base: String,
}

/// The directory of a request path, with its trailing `/`: `/live/a/master.m3u8` → `/live/a/`.
pub fn directory(path: &str) -> &str {
    path.rfind('/').map_or("/", |i| &path[..=i])
}

fn resolve(base: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_owned();
    }
    if let Some(absolute_path) = uri.strip_prefix('/') {
        // base is scheme://host[:port]/dir/: keep the origin part only.
        let origin_end = base
            .find("://")
            .and_then(|s| base[s + 3..].find('/').map(|i| s + 3 + i))
            .unwrap_or(base.len());
        return format!("{}/{absolute_path}", &base[..origin_end]);
    }
    format!("{base}{uri}")
}

/// Replaces the value of quoted attribute `name` in an attribute list, if present.
fn map_attribute(line: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    let needle = format!("{name}=\"");
    let Some(start) = line
        .match_indices(&needle)
        .find(|(i, _)| *i == 0 || matches!(line.as_bytes()[i - 1], b',' | b':'))
        .map(|(i, _)| i + needle.len())
    else {
        return line.to_owned();
    };
    let Some(len) = line[start..].find('"') else {
        return line.to_owned();
    };
    format!(
        "{}{}{}",
        &line[..start],
        f(&line[start..start + len]),
        &line[start + len..]
    )
}

fn group_for(group: &str, pathway: &str) -> String {
    format!("{group}-{pathway}")
}

/// Rewrites an HLS multivariant playlist: each variant and rendition is repeated per pathway
/// with absolute URIs and its own rendition groups, and `EXT-X-CONTENT-STEERING` points at
/// `server_uri`, starting on the first pathway. A media playlist (no variants) is returned
/// unchanged.
pub fn rewrite_hls(playlist: &str, pathways: &[Pathway], server_uri: &str) -> String {
    if !playlist.contains("#EXT-X-STREAM-INF") || pathways.is_empty() {
        return playlist.to_owned();
    }
    let mut header = Vec::new();
    let mut media = Vec::new();
    let mut variants: Vec<(&str, &str)> = Vec::new();
    let mut lines = playlist.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            // The URI is the next line that is neither blank nor a comment.
            let uri = lines
                .by_ref()
                .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .unwrap_or("");
            variants.push((line, uri));
        } else if line.starts_with("#EXT-X-MEDIA:")
            || line.starts_with("#EXT-X-I-FRAME-STREAM-INF:")
        {
            media.push(line);
        } else if !line.starts_with("#EXT-X-CONTENT-STEERING") && !line.trim().is_empty() {
            header.push(line);
        }
    }
    let mut out = String::with_capacity(playlist.len() * (pathways.len() + 1));
    for line in &header {
        out.push_str(line);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"{server_uri}\",PATHWAY-ID=\"{}\"",
        pathways[0].id
    );
    let groups = ["AUDIO", "VIDEO", "SUBTITLES"];
    for pathway in pathways {
        for line in &media {
            let mut line = map_attribute(line, "URI", |uri| resolve(&pathway.base, uri));
            line = map_attribute(&line, "GROUP-ID", |g| group_for(g, &pathway.id));
            for group in groups {
                line = map_attribute(&line, group, |g| group_for(g, &pathway.id));
            }
            if line.starts_with("#EXT-X-I-FRAME-STREAM-INF:") {
                let _ = write!(line, ",PATHWAY-ID=\"{}\"", pathway.id);
            }
            out.push_str(&line);
            out.push('\n');
        }
        for (inf, uri) in &variants {
            let mut line = (*inf).to_owned();
            for group in groups {
                line = map_attribute(&line, group, |g| group_for(g, &pathway.id));
            }
            let _ = writeln!(out, "{line},PATHWAY-ID=\"{}\"", pathway.id);
            let _ = writeln!(out, "{}", resolve(&pathway.base, uri.trim()));
        }
    }
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rewrites a DASH MPD: one MPD-level `<BaseURL serviceLocation=…>` per pathway and a
/// `<ContentSteering>` pointing at `server_uri`. Returns `None` if the text has no `<MPD>`.
pub fn rewrite_dash(mpd: &str, pathways: &[Pathway], server_uri: &str) -> Option<String> {
    let open = mpd.find("<MPD")?;
    let end = open + mpd[open..].find('>')? + 1;
    if mpd[..end].ends_with("/>") || pathways.is_empty() {
        return Some(mpd.to_owned());
    }
    let mut inserted = String::new();
    for pathway in pathways {
        let _ = write!(
            inserted,
            "\n  <BaseURL serviceLocation=\"{}\">{}</BaseURL>",
            xml_escape(&pathway.id),
            xml_escape(&pathway.base)
        );
    }
    let _ = write!(
        inserted,
        "\n  <ContentSteering defaultServiceLocation=\"{}\" queryBeforeStart=\"false\">{}</ContentSteering>",
        xml_escape(&pathways[0].id),
        xml_escape(server_uri)
    );
    Some(format!("{}{inserted}{}", &mpd[..end], &mpd[end..]))
}

/// Which player format a steering manifest is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `PATHWAY-PRIORITY`.
    Hls,
    /// `SERVICE-LOCATION-PRIORITY`.
    Dash,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "VERSION")]
    version: u8,
    #[serde(rename = "TTL")]
    ttl: u64,
    #[serde(rename = "RELOAD-URI")]
    reload_uri: &'a str,
    #[serde(rename = "PATHWAY-PRIORITY", skip_serializing_if = "Option::is_none")]
    pathway_priority: Option<&'a [&'a str]>,
    #[serde(
        rename = "SERVICE-LOCATION-PRIORITY",
        skip_serializing_if = "Option::is_none"
    )]
    service_location_priority: Option<&'a [&'a str]>,
}

/// The steering manifest: pathways in priority order, asked again after `ttl_secs`.
pub fn manifest(format: Format, priority: &[&str], ttl_secs: u64, reload_uri: &str) -> String {
    let m = Manifest {
        version: 1,
        ttl: ttl_secs,
        reload_uri,
        pathway_priority: (format == Format::Hls).then_some(priority),
        service_location_priority: (format == Format::Dash).then_some(priority),
    };
    serde_json::to_string(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pathways() -> Vec<Pathway> {
        vec![
            Pathway {
                id: "ams".into(),
                base: "http://edge-a:8000/t/tok/live/s1/".into(),
            },
            Pathway {
                id: "fra".into(),
                base: "https://edge-b/t/tok/live/s1/".into(),
            },
        ]
    }

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,URI=\"audio/playlist.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"audio\"\n\
        720p/playlist.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio\"\n\
        /live/s1/360p/playlist.m3u8\n";

    #[test]
    fn every_variant_is_repeated_per_pathway_with_absolute_uris() {
        let out = rewrite_hls(MASTER, &pathways(), "/v1/steering?stream=live%2Fs1");
        let expected = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-CONTENT-STEERING:SERVER-URI=\"/v1/steering?stream=live%2Fs1\",PATHWAY-ID=\"ams\"\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-ams\",NAME=\"audio\",DEFAULT=YES,URI=\"http://edge-a:8000/t/tok/live/s1/audio/playlist.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"audio-ams\",PATHWAY-ID=\"ams\"\n\
            http://edge-a:8000/t/tok/live/s1/720p/playlist.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio-ams\",PATHWAY-ID=\"ams\"\n\
            http://edge-a:8000/live/s1/360p/playlist.m3u8\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-fra\",NAME=\"audio\",DEFAULT=YES,URI=\"https://edge-b/t/tok/live/s1/audio/playlist.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"audio-fra\",PATHWAY-ID=\"fra\"\n\
            https://edge-b/t/tok/live/s1/720p/playlist.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio-fra\",PATHWAY-ID=\"fra\"\n\
            https://edge-b/live/s1/360p/playlist.m3u8\n";
        assert_eq!(out, expected);
        // The codecs string holds a comma inside quotes: AUDIO inside CODECS is not touched.
        assert!(!out.contains("CODECS=\"avc1.64001f,mp4a.40.2-"));
    }

    #[test]
    fn media_playlists_and_rewritten_playlists_pass_through() {
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n1.m4s\n";
        assert_eq!(rewrite_hls(media, &pathways(), "/s"), media);
        let once = rewrite_hls(MASTER, &pathways()[..1], "/s");
        assert_eq!(once.matches("#EXT-X-CONTENT-STEERING").count(), 1);
        assert_eq!(rewrite_hls(MASTER, &[], "/s"), MASTER);
    }

    #[test]
    fn the_mpd_gets_a_base_url_per_pathway_and_steering() {
        let mpd = "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"dynamic\">\n  <Period id=\"0\"/>\n</MPD>\n";
        let out = rewrite_dash(
            mpd,
            &pathways(),
            "http://router/v1/steering?stream=live%2Fs1&format=dash",
        )
        .expect("mpd");
        assert!(out.contains(
            "type=\"dynamic\">\n  <BaseURL serviceLocation=\"ams\">http://edge-a:8000/t/tok/live/s1/</BaseURL>\n  \
             <BaseURL serviceLocation=\"fra\">https://edge-b/t/tok/live/s1/</BaseURL>\n  \
             <ContentSteering defaultServiceLocation=\"ams\" queryBeforeStart=\"false\">http://router/v1/steering?stream=live%2Fs1&amp;format=dash</ContentSteering>\n  <Period"
        ), "{out}");
        assert_eq!(rewrite_dash("not xml", &pathways(), "/s"), None);
    }

    #[test]
    fn manifests_name_the_priority_key_of_each_format() {
        assert_eq!(
            manifest(Format::Hls, &["fra", "ams"], 5, "/v1/steering?stream=a"),
            r#"{"VERSION":1,"TTL":5,"RELOAD-URI":"/v1/steering?stream=a","PATHWAY-PRIORITY":["fra","ams"]}"#
        );
        assert_eq!(
            manifest(Format::Dash, &["ams"], 10, "/x"),
            r#"{"VERSION":1,"TTL":10,"RELOAD-URI":"/x","SERVICE-LOCATION-PRIORITY":["ams"]}"#
        );
    }

    #[test]
    fn directories_keep_their_slash() {
        assert_eq!(directory("/live/a/master.m3u8"), "/live/a/");
        assert_eq!(directory("/t/x/live/a/manifest.mpd"), "/t/x/live/a/");
        assert_eq!(directory("master.m3u8"), "/");
    }
}
