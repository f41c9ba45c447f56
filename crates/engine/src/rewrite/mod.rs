//! The ONNX graph rewrites, applied to the protobuf before tract parses it, in this order
//! ([`crate::rewrite()`]): [`contrib`] turns onnxruntime's `com.microsoft` operators into
//! standard ONNX ones (always: tract has none of them), then, for lookout's kernels, [`qdq`]
//! folds QDQ chains and renames convolutions onto lookout's operators. They edit the protobuf
//! only; what they import from the operators is their op-type names (`ops::names`).

pub mod contrib;
pub(crate) mod qdq;
