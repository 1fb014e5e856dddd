//! The embedded log on disk (`purge_bus.log_dir`), so a bus restart or crash loses no purge it
//! acknowledged and nodes carry on from their offsets:
//!
//! - `epoch`: the log's identity, written once when the directory is new. Nodes start over
//!   from offset 0 only when it changes (the directory was replaced).
//! - `purges.log`: one JSON line per purge, `{"offset":N,"message":{...}}`, appended and synced
//!   before the API answers 202. After the oldest purges are trimmed, the file is rewritten
//!   (to a temporary file, synced, renamed over) once more than half of it is trimmed; the
//!   rewrite starts with a `{"offset":N}` line that says where the log now begins.
//!
//! A last line cut short by a crash (a purge that was never acknowledged) is dropped when the
//! file is opened. Any other line that does not read back stops the bus with the file and line
//! number: an operator decides, nothing is dropped silently.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cascade_purge_follower::message::PurgeMessage;

const LOG: &str = "purges.log";
const EPOCH: &str = "epoch";

/// One line of `purges.log`: a purge at `offset`, or (without a message) where the log begins.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    offset: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<PurgeMessage>,
}

/// What was on disk when the log was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The log's identity.
    pub epoch: String,
    /// Offset of the first purge kept.
    pub first: usize,
    /// The purges, from `first` on.
    pub entries: VecDeque<PurgeMessage>,
    /// A torn last line was dropped.
    pub dropped_torn_tail: bool,
}

/// The open log file.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    file: File,
    /// Lines in the file for purges trimmed since the last rewrite.
    dead: usize,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync the directory", dir, e))
}

/// Writes `text` to `dir/name` atomically and durably.
fn write_atomically(dir: &Path, name: &str, text: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file =
        File::create(&temporary).map_err(|e| io_error("cannot create", &temporary, e))?;
    file.write_all(text)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot write", &temporary, e))?;
    std::fs::rename(&temporary, &path).map_err(|e| io_error("cannot rename", &temporary, e))?;
    sync_dir(dir)
}

fn encode(line: &Line) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

impl LogFile {
    /// Opens (or creates) the log in `dir`; `new_epoch` names a log created now.
    pub fn open(dir: &Path, new_epoch: &str) -> Result<(Self, Recovered), String> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let epoch_path = dir.join(EPOCH);
        let epoch = match std::fs::read_to_string(&epoch_path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            Ok(_) => {
                return Err(format!(
                    "{} is empty: restore it, or remove the directory to start a new log",
                    epoch_path.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(dir, EPOCH, new_epoch.as_bytes())?;
                new_epoch.to_owned()
            }
            Err(e) => return Err(io_error("cannot read", &epoch_path, e)),
        };
        let path = dir.join(LOG);
        let mut recovered = read_lines(&path)?;
        recovered.epoch = epoch;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("cannot open", &path, e))?;
        sync_dir(dir)?;
        Ok((
            Self {
                dir: dir.to_owned(),
                file,
                dead: 0,
            },
            recovered,
        ))
    }

    /// Appends the purge at `offset` and syncs it to disk.
    pub fn append(&mut self, offset: usize, message: &PurgeMessage) -> Result<(), String> {
        let line = encode(&Line {
            offset,
            message: Some(message.clone()),
        });
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error("cannot append to", &self.dir.join(LOG), e))
    }

    /// Notes that `count` purges were trimmed from the front; rewrites the file with only
    /// `kept` (starting at `first`) once the trimmed lines outnumber the kept ones. Returns
    /// whether it rewrote.
    pub fn trimmed(
        &mut self,
        count: usize,
        first: usize,
        kept: &VecDeque<PurgeMessage>,
    ) -> Result<bool, String> {
        self.dead += count;
        if self.dead == 0 || self.dead <= kept.len() {
            return Ok(false);
        }
        let mut text = encode(&Line {
            offset: first,
            message: None,
        });
        for (i, message) in kept.iter().enumerate() {
            text.extend(encode(&Line {
                offset: first + i,
                message: Some(message.clone()),
            }));
        }
        write_atomically(&self.dir, LOG, &text)?;
        let path = self.dir.join(LOG);
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error("cannot open", &path, e))?;
        self.dead = 0;
        Ok(true)
    }
}

/// Reads `path`, dropping a torn last line (it is cut off the file).
fn read_lines(path: &Path) -> Result<Recovered, String> {
    let mut recovered = Recovered::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(recovered),
        Err(e) => return Err(io_error("cannot read", path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut good_bytes = 0u64;
    let mut next: Option<usize> = None;
    let mut raw = Vec::new();
    let mut number = 0usize;
    loop {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| io_error("cannot read", path, e))?;
        if read == 0 {
            break;
        }
        number += 1;
        let complete = raw.last() == Some(&b'\n');
        let parsed = serde_json::from_slice::<Line>(&raw);
        let line = match parsed {
            Ok(line) if complete => line,
            _ => {
                // Only the last line can be torn: it was being written when the bus stopped.
                let mut rest = Vec::new();
                let more = reader
                    .read_until(b'\n', &mut rest)
                    .map_err(|e| io_error("cannot read", path, e))?;
                if more == 0 {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| io_error("cannot open", path, e))?;
                    file.set_len(good_bytes)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io_error("cannot cut the torn last line off", path, e))?;
                    recovered.dropped_torn_tail = true;
                    break;
                }
                return Err(format!(
                    "{} line {number} is not a purge record; restore the file, or remove the \
                     directory to start a new log (nodes then start over)",
                    path.display()
                ));
            }
        };
        match (line.message, next) {
            (None, None) => {
                recovered.first = line.offset;
                next = Some(line.offset);
            }
            (Some(message), expected) => {
                let expected = expected.unwrap_or(line.offset);
                if line.offset != expected {
                    return Err(format!(
                        "{} line {number}: offset {} where {expected} was expected; restore \
                         the file, or remove the directory to start a new log",
                        path.display(),
                        line.offset
                    ));
                }
                if recovered.entries.is_empty() && next.is_none() {
                    recovered.first = line.offset;
                }
                recovered.entries.push_back(message);
                next = Some(line.offset + 1);
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{} line {number}: a start marker after the first line",
                    path.display()
                ));
            }
        }
        good_bytes += read as u64;
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_purge_follower::request::{PurgeAction, PurgeKind, PurgeRequest};

    fn message(id: &str) -> PurgeMessage {
        PurgeMessage {
            id: id.into(),
            request: PurgeRequest {
                kind: PurgeKind::Tag,
                targets: vec![format!("stream/{id}")],
                action: PurgeAction::Delete,
                confirm_all: false,
            },
            issued_ms: 7,
        }
    }

    fn ids(entries: &VecDeque<PurgeMessage>) -> Vec<&str> {
        entries.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn purges_and_the_epoch_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = LogFile::open(dir.path(), "e1").unwrap();
        assert_eq!(recovered.epoch, "e1");
        assert!(recovered.entries.is_empty());
        log.append(0, &message("a")).unwrap();
        log.append(1, &message("b")).unwrap();
        drop(log);
        let (_, recovered) = LogFile::open(dir.path(), "e2").unwrap();
        assert_eq!(recovered.epoch, "e1", "an existing log keeps its identity");
        assert_eq!(recovered.first, 0);
        assert_eq!(ids(&recovered.entries), ["a", "b"]);
        assert!(!recovered.dropped_torn_tail);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_damaged_middle_line_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogFile::open(dir.path(), "e1").unwrap();
        log.append(0, &message("a")).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"offset":1,"message":{"id":"b","requ"#)
            .unwrap();
        drop(file);
        let (mut log, recovered) = LogFile::open(dir.path(), "e2").unwrap();
        assert!(recovered.dropped_torn_tail);
        assert_eq!(ids(&recovered.entries), ["a"]);
        log.append(1, &message("b")).unwrap();
        drop(log);
        let (_, recovered) = LogFile::open(dir.path(), "e3").unwrap();
        assert_eq!(
            ids(&recovered.entries),
            ["a", "b"],
            "appends continue after the cut"
        );

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"a\"", "\"a", 1)).unwrap();
        let err = LogFile::open(dir.path(), "e4").unwrap_err();
        assert!(
            err.contains("purges.log line 1 is not a purge record"),
            "{err}"
        );
        assert!(
            std::fs::read_to_string(&path).unwrap().contains("\"b\""),
            "a refused open changes nothing"
        );
    }

    #[test]
    fn the_file_is_rewritten_once_most_of_it_is_trimmed_and_keeps_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogFile::open(dir.path(), "e1").unwrap();
        let mut kept: VecDeque<PurgeMessage> = VecDeque::new();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            log.append(i, &message(id)).unwrap();
            kept.push_back(message(id));
        }
        kept.pop_front();
        kept.pop_front();
        assert!(!log.trimmed(2, 2, &kept).unwrap(), "2 dead of 5: not yet");
        kept.pop_front();
        kept.pop_front();
        assert!(log.trimmed(2, 4, &kept).unwrap(), "4 dead, 1 kept: rewrite");
        log.append(5, &message("f")).unwrap();
        drop(log);
        let (_, recovered) = LogFile::open(dir.path(), "e2").unwrap();
        assert_eq!(recovered.first, 4);
        assert_eq!(ids(&recovered.entries), ["e", "f"]);
        let lines = std::fs::read_to_string(dir.path().join(LOG)).unwrap();
        assert_eq!(lines.lines().count(), 3, "{lines}");
    }

    #[test]
    fn an_empty_epoch_file_is_an_error_not_a_new_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH), "").unwrap();
        let err = LogFile::open(dir.path(), "e1").unwrap_err();
        assert!(err.contains("epoch is empty"), "{err}");
    }
}
