//! Examples for greenhub: see `examples/`.
