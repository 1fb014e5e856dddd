//! The shield tier: the edge's caching core (from `cascade-edge`) configured as a parent tier
//! with a memory and a disk tier, primary and backup origins, and first-fetch stamping, so the
//! origin sees each object once however many edges ask. So far the crate provides the
//! `cascade-shield` server with the shared service conventions.
