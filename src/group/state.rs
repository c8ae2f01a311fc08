//! The group coordinator state machine (being written).
