//! model loading (stub)
