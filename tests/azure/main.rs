//! The Azure adapters against local fakes that enforce each service's documented contract
//! (no Azure service can be reached from here): each runs its port's conformance suite and
//! the tests specific to its service.

mod cosmos;
mod distributed;
mod doctor;
mod notification_hubs;
mod service_bus;
mod system;
