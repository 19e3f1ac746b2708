//! The synchronisation primitives the pools use, from `std` normally and
//! from `loom` under `--cfg loom`, so the model tests in `loom_tests`
//! explore the same code the data path runs. Owns nothing else.

// loom's try_lock returns std's TryLockError too.
pub(crate) use std::sync::TryLockError;

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicU32, AtomicUsize},
    Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicU32, AtomicUsize},
    Mutex, MutexGuard,
};
