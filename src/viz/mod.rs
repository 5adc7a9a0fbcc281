//! visualisations (stub)
