//! Requantization: the modes of DESIGN.md §2 and TFLite's multiplier derivation.
