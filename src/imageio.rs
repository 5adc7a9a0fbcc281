//! Images in and out. (stub: being written)
