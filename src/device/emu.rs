//! The emulated device (stub: being written).
