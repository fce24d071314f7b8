//! The shared exactness tester (feature `testing`): every kernel goes through it.
