//! Newtypes shared across layers for values that are easy to confuse.
