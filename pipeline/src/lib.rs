//! Placeholder lib
