//! Shape inference (stub)
