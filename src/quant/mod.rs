//! Quantizers (DESIGN.md §3). Uniform quantization lives in [`uniform`].
