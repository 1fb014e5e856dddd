//! The ABR ladder: the renditions a stream may be transcoded to, and the settings that turn
//! a chosen subset into one ffmpeg command line ([`LadderSettings::ffmpeg_args`]).
//!
//! Every video rendition is cut from the same decoded frames with keyframes forced at the same
//! media times (`-force_key_frames` on a fixed interval, scene-cut keyframes off), so segment
//! boundaries line up across renditions and a player can switch at any of them.

use std::path::PathBuf;
use std::time::Duration;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Name used in URLs and the API (`720p`).
    pub name: &'static str,
    /// Output height in pixels; the width follows the input's aspect ratio.
    pub height: u32,
    /// Target video bitrate in kbit/s.
    pub video_kbps: u32,
}

/// Every rung the origin offers, highest first.
pub const LADDER: [Rung; 5] = [
    Rung {
        name: "1080p",
        height: 1080,
        video_kbps: 5000,
    },
    Rung {
        name: "720p",
        height: 720,
        video_kbps: 2800,
    },
    Rung {
        name: "480p",
        height: 480,
        video_kbps: 1400,
    },
    Rung {
        name: "360p",
        height: 360,
        video_kbps: 800,
    },
    Rung {
        name: "240p",
        height: 240,
        video_kbps: 400,
    },
];

/// Name of the audio rendition.
pub const AUDIO_RENDITION: &str = "audio";

/// The rung called `name`, if the ladder has one.
pub fn rung(name: &str) -> Option<Rung> {
    LADDER.iter().copied().find(|r| r.name == name)
}

/// The rung names, for error messages.
pub fn rung_names() -> String {
    LADDER.map(|r| r.name).join(", ")
}

/// The video encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoEncoder {
    /// libx264 on the CPU.
    X264,
    /// NVIDIA's hardware H.264 encoder.
    Nvenc,
}

/// What one live stream is transcoded to.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderSettings {
    /// Video renditions, any order (output order is highest first).
    pub renditions: Vec<Rung>,
    /// The encoder.
    pub encoder: VideoEncoder,
    /// x264 preset.
    pub preset: String,
    /// Time between keyframes (and so the shortest segment).
    pub keyframe_interval: Duration,
    /// Target fragment (LL-HLS part) duration.
    pub part_target: Duration,
    /// Audio bitrate in kbit/s.
    pub audio_kbps: u32,
}

/// Where ffmpeg writes each output.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    /// One path per entry of [`LadderSettings::video_outputs`], same order.
    pub video: Vec<PathBuf>,
    /// The audio output, when the input has audio.
    pub audio: Option<PathBuf>,
}

impl LadderSettings {
    /// The video renditions in output order: highest first, duplicates removed.
    pub fn video_outputs(&self) -> Vec<Rung> {
        let mut rungs: Vec<Rung> = LADDER
            .iter()
            .copied()
            .filter(|r| self.renditions.contains(r))
            .collect();
        rungs.dedup();
        rungs
    }

    /// Drops the rungs taller than the input (no upscaling), keeping at least the lowest chosen
    /// one so the stream always has a rendition.
    pub fn fit_to_input(&mut self, input_height: u32) {
        let chosen = self.video_outputs();
        let fitting: Vec<Rung> = chosen
            .iter()
            .copied()
            .filter(|r| r.height <= input_height)
            .collect();
        self.renditions = if fitting.is_empty() {
            chosen.last().copied().into_iter().collect()
        } else {
            fitting
        };
    }

    /// The ffmpeg command line (without the program name): FLV on stdin, progress on stdout,
    /// errors on stderr, one fragmented MP4 per output.
    pub fn ffmpeg_args(&self, outputs: &Outputs) -> Vec<String> {
        let rungs = self.video_outputs();
        let mut args: Vec<String> = [
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostats",
            "-progress",
            "pipe:1",
            "-fflags",
            // Not +nobuffer: it discards what was read while probing (a second of audio).
            "+genpts",
            "-analyzeduration",
            "1000000",
            "-f",
            "flv",
            "-i",
            "pipe:0",
        ]
        .map(String::from)
        .to_vec();

        let labels: Vec<String> = (0..rungs.len()).map(|i| format!("[v{i}]")).collect();
        let mut graph = format!("[0:v]split={}{}", rungs.len(), labels.concat());
        for (i, rung) in rungs.iter().enumerate() {
            graph.push_str(&format!(
                ";[v{i}]scale=-2:{}:flags=bicubic,format=yuv420p[out{i}]",
                rung.height
            ));
        }
        args.push("-filter_complex".into());
        args.push(graph);

        let keyframe_secs = self.keyframe_interval.as_secs_f64();
        let part_us = fragment_duration(self.part_target)
            .as_micros()
            .max(1)
            .to_string();
        for (i, (rung, path)) in rungs.iter().zip(&outputs.video).enumerate() {
            args.extend(["-map".into(), format!("[out{i}]")]);
            args.extend(self.encoder_args(rung));
            args.extend([
                "-force_key_frames".into(),
                format!("expr:gte(t,n_forced*{keyframe_secs})"),
            ]);
            args.extend(fragmented_mp4(&part_us, path));
        }
        if let Some(path) = &outputs.audio {
            args.extend(
                ["-map", "0:a:0", "-c:a", "aac", "-ac", "2", "-ar", "48000"].map(String::from),
            );
            args.extend(["-b:a".into(), format!("{}k", self.audio_kbps)]);
            args.extend(fragmented_mp4(&part_us, path));
        }
        args
    }

    fn encoder_args(&self, rung: &Rung) -> Vec<String> {
        let kbps = rung.video_kbps;
        // A VBV buffer of one keyframe interval keeps each segment near the target bitrate.
        let bufsize = (f64::from(kbps) * self.keyframe_interval.as_secs_f64()).round() as u64;
        let mut args: Vec<String> = match self.encoder {
            VideoEncoder::X264 => vec![
                "-c:v".into(),
                "libx264".into(),
                "-preset".into(),
                self.preset.clone(),
                "-tune".into(),
                "zerolatency".into(),
                "-profile:v".into(),
                "high".into(),
                // No keyframes of the encoder's own choosing: only the forced ones.
                "-sc_threshold".into(),
                "0".into(),
                "-g".into(),
                "100000".into(),
            ],
            VideoEncoder::Nvenc => vec![
                "-c:v".into(),
                "h264_nvenc".into(),
                "-preset".into(),
                "p4".into(),
                "-tune".into(),
                "ll".into(),
                "-forced-idr".into(),
                "1".into(),
                "-no-scenecut".into(),
                "1".into(),
                "-g".into(),
                "100000".into(),
            ],
        };
        args.extend([
            "-b:v".into(),
            format!("{kbps}k"),
            "-maxrate".into(),
            format!("{kbps}k"),
            "-bufsize".into(),
            format!("{bufsize}k"),
        ]);
        args
    }
}

fn fragmented_mp4(part_us: &str, path: &std::path::Path) -> Vec<String> {
    vec![
        "-f".into(),
        "mp4".into(),
        "-movflags".into(),
        "+empty_moov+default_base_moof+frag_keyframe+skip_trailer".into(),
        "-frag_duration".into(),
        part_us.into(),
        "-flush_packets".into(),
        "1".into(),
        "-y".into(),
        path.display().to_string(),
    ]
}

/// The `-frag_duration` that keeps every fragment within `part_target`: ffmpeg closes a
/// fragment once it has reached the duration, so fragments run up to one frame over it. One
/// AAC frame (1024 samples, at most 23.2 ms at 44.1 kHz) is the longest frame we produce at
/// the frame rates we take, so asking for 25 ms less keeps parts at or under the target.
pub fn fragment_duration(part_target: Duration) -> Duration {
    part_target
        .saturating_sub(Duration::from_millis(25))
        .max(part_target / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(names: &[&str]) -> LadderSettings {
        LadderSettings {
            renditions: names.iter().filter_map(|n| rung(n)).collect(),
            encoder: VideoEncoder::X264,
            preset: "veryfast".into(),
            keyframe_interval: Duration::from_secs(2),
            part_target: Duration::from_millis(500),
            audio_kbps: 128,
        }
    }

    fn outputs(n: usize, audio: bool) -> Outputs {
        Outputs {
            video: (0..n).map(|i| PathBuf::from(format!("/w/v{i}"))).collect(),
            audio: audio.then(|| PathBuf::from("/w/a")),
        }
    }

    #[test]
    fn outputs_are_highest_first_without_duplicates() {
        let s = settings(&["240p", "720p", "720p", "480p"]);
        let names: Vec<_> = s.video_outputs().iter().map(|r| r.name).collect();
        assert_eq!(names, ["720p", "480p", "240p"]);
    }

    #[test]
    fn rungs_above_the_input_are_dropped_but_one_always_stays() {
        let mut s = settings(&["1080p", "720p", "360p"]);
        s.fit_to_input(720);
        let names: Vec<_> = s.video_outputs().iter().map(|r| r.name).collect();
        assert_eq!(names, ["720p", "360p"]);
        let mut s = settings(&["1080p", "720p"]);
        s.fit_to_input(144);
        let names: Vec<_> = s.video_outputs().iter().map(|r| r.name).collect();
        assert_eq!(names, ["720p"]);
    }

    #[test]
    fn every_rendition_gets_its_own_fragmented_output_with_aligned_keyframes() {
        let s = settings(&["720p", "480p", "360p", "240p"]);
        let args = s.ffmpeg_args(&outputs(4, true));
        let joined = args.join(" ");
        assert!(joined.contains("-f flv -i pipe:0"));
        assert!(joined.contains("-progress pipe:1"));
        assert!(joined.contains("[0:v]split=4[v0][v1][v2][v3]"));
        assert!(joined.contains("[v0]scale=-2:720"));
        assert!(joined.contains("[v3]scale=-2:240"));
        assert_eq!(
            args.iter()
                .filter(|a| *a == "expr:gte(t,n_forced*2)")
                .count(),
            4,
            "every video output forces keyframes on the same clock"
        );
        assert_eq!(args.iter().filter(|a| *a == "-sc_threshold").count(), 4);
        assert_eq!(
            args.iter().filter(|a| a.contains("+empty_moov")).count(),
            5,
            "four video outputs and one audio output"
        );
        assert!(joined.contains("-frag_duration 475000"));
        assert!(joined.contains("-b:v 2800k"));
        assert!(joined.contains("-b:v 400k"));
        assert!(joined.contains("-map 0:a:0 -c:a aac"));
        assert!(joined.contains("-b:a 128k"));
        assert!(joined.ends_with("/w/a"));
    }

    #[test]
    fn no_audio_output_without_audio_input() {
        let args = settings(&["360p"]).ffmpeg_args(&outputs(1, false));
        assert!(!args.iter().any(|a| a == "0:a:0"));
        assert!(args.iter().any(|a| a == "/w/v0"));
    }

    #[test]
    fn nvenc_uses_forced_idr_frames() {
        let mut s = settings(&["720p"]);
        s.encoder = VideoEncoder::Nvenc;
        let joined = s.ffmpeg_args(&outputs(1, true)).join(" ");
        assert!(joined.contains("-c:v h264_nvenc"));
        assert!(joined.contains("-forced-idr 1"));
        assert!(!joined.contains("libx264"));
    }
}
