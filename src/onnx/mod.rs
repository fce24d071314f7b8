//! ONNX quantized operators with ONNX's exact semantics.
