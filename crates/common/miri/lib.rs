//! `common::http::recycle`, compiled alone so that Miri can run its tests (see Cargo.toml).
#![allow(dead_code)]

#[path = "../src/http/recycle.rs"]
mod recycle;
