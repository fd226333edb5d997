//! Floe's integration tests, one binary (one link of polars) with a module per surface.

mod common;

mod auth;
mod cli;
mod crash;
mod custom_jobs;
mod edge;
mod hostile;
mod server;
mod shop;
mod sources;
mod store_errors;
mod validation;
