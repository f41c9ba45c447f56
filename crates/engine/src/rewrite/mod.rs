//! The ONNX graph rewrites, applied to the protobuf before tract parses it ([`crate::rewrite()`]).

pub mod contrib;
pub(crate) mod qdq;
