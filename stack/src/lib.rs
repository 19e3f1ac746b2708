//! The TCP/IP stack on top of the driver queues.
//!
//! smoltcp arrives with the stack issue; until then this crate only re-exports
//! what applications need so the dependency direction
//! apps -> stack -> pipeline -> driver already holds.

pub use driver;
pub use pipeline;

pub mod iperf3;
