//! Intentionally empty: the suite lives in `blackbox/`.
