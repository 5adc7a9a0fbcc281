//! Execution (stub)
