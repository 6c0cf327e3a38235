//! # framefusion-flight-server
//!
//! The Arrow Flight SQL service over `framefusion-engine`, for remote clients (ADBC, JDBC,
//! the arrow-flight CLI). It is the only crate that knows tonic serving.
//!
//! This crate is a workspace member reserved by the architecture; the service itself
//! arrives with the Flight SQL issue and has no code yet.
