//! Fused elementwise groups (in progress).
