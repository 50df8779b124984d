//! End-to-end tests: the real application on a random port, through HTTP and a browser.

mod analysts;
mod analytics;
mod browser;
mod dead_letters;
mod edge;
mod loadgen;
mod notifications;
mod orders;
mod outages;
mod refusals;
mod replay;
mod schema_evolution;
mod sign_in;
mod system;
