//! ffmpeg supervision for the origin: an ABR ladder becomes ffmpeg arguments, one ffmpeg child
//! per live stream is fed FLV and writes one fragmented-MP4 output per rendition, and a crashed
//! child is restarted with backoff. Built by the origin ingest issue; empty so far.
