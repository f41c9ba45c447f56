//! The ONNX graph rewrites.

pub mod contrib;
pub mod qdq;
