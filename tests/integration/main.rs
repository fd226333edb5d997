//! Floe's integration tests, one binary (one link of polars) with a module per surface.

mod common;

mod api_conformance;
mod auth;
mod callbacks;
mod catalog;
mod checks;
mod cli;
mod crash;
mod custom_jobs;
mod data_files;
mod edge;
mod floe_test;
mod fuzz;
mod grid;
mod hostile;
mod hostile_cli;
mod inputs;
mod limits;
mod manual_runs;
mod module_graph;
mod parity;
mod plan;
mod plan_check;
mod server;
mod shop;
mod sketches;
mod sources;
mod store_errors;
mod ui;
mod validation;
mod workers;
