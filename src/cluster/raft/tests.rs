//! Driver tests: added in the next commit.
