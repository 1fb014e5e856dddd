//! The origin: RTMP ingest with stream keys, the stream registry and management API, the CMAF
//! packager, LL-HLS and DASH delivery with the cache headers the tiers rely on, and archiving
//! to an object store (filesystem or S3) for DVR and VOD. So far the crate provides the
//! `cascade-origin` server with the shared service conventions.
