//! framefusion integration tests: one binary, one module per area.

mod bad_input;
mod catalog;
mod cli;
mod conformance;
mod console;
mod cut;
mod decode_once;
mod distributed;
mod faces;
mod flight;
mod frames;
mod lipsync;
mod manifest;
mod metrics;
mod models;
mod object_store;
mod previews;
mod probe;
mod shell;
mod shots;
mod signals;
mod slt;
mod speech;
mod tables_in_cloud;
mod tables_in_s3;
mod text;
