//! The committed-offsets store (being written).
