//! What every one of lookout's operators repeats to plug into tract, written once: the `Op`
//! impl of a typed operator ([`impl_op!`]), the inference rules of an expansion whose one
//! output has its first input's shape ([`same_shape_rules`]), and what a builder in tract's ONNX
//! op register returns ([`parsed`]).
//!
//! What differs between operators (their evaluation, output facts and wiring) stays in their
//! own files, written out.

use tract_onnx::tract_hir::internal::*;

/// `impl Op for $op`: the operator's name in tract's plans (and in `lookout bench --profile`),
/// one line of `info` for node dumps (shapes, kernels), and the cast to `TypedOp` tract's
/// optimiser needs. `$this` names the operator in both expressions; `name` is a
/// `&'static str`, `info` a `String`. With `$op + Eq`, also `impl Eq`, for an operator that
/// derives only `PartialEq` because of float fields: tract compares operators to merge
/// identical nodes, and those fields (finite weights, scales, clip bounds, never NaN) compare
/// equal bit for bit or not at all.
///
/// It expands to tract's own paths (`Op`, `StaticName`, `op_as_typed_op!`), which every
/// operator module has in scope from `tract_hir::internal::*`.
///
/// A macro, not a trait with a blanket impl: `impl<T: LookoutOp> Op for T` is refused by
/// coherence (`Op` is tract's trait, and a bare type parameter cannot implement a foreign
/// trait), and tract's `op_as_typed_op!` is itself a macro that must expand inside the `impl`.
macro_rules! impl_op {
    ($op:ident + Eq, |$this:ident| name: $name:expr, info: $info:expr $(,)?) => {
        impl Eq for $op {}
        impl_op!($op, |$this| name: $name, info: $info);
    };
    ($op:ident, |$this:ident| name: $name:expr, info: $info:expr $(,)?) => {
        impl Op for $op {
            fn name(&self) -> StaticName {
                #[allow(unused_variables, reason = "most operators' name is a constant")]
                let $this = self;
                StaticName::from($name)
            }

            fn info(&self) -> TractResult<Vec<String>> {
                let $this = self;
                Ok(vec![$info])
            }

            op_as_typed_op!();
        }
    };
}
pub(super) use impl_op;

/// Where the output type of a [`same_shape_rules`] expansion comes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum OutputType {
    /// Input `i`'s type (an 8-bit output takes its zero point's type).
    Input(usize),
    /// This type.
    Fixed(DatumType),
}

/// The inference rules of an expansion with `arity` inputs and one output of its first
/// input's shape and of type `dt`.
pub(super) fn same_shape_rules<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    arity: usize,
    dt: OutputType,
) -> InferenceResult {
    check_input_arity(inputs, arity)?;
    check_output_arity(outputs, 1)?;
    match dt {
        OutputType::Input(i) => s.equals(&outputs[0].datum_type, &inputs[i].datum_type)?,
        OutputType::Fixed(dt) => s.equals(&outputs[0].datum_type, dt)?,
    }
    s.equals(&outputs[0].shape, &inputs[0].shape)
}

/// What a builder in tract's ONNX op register returns for an operator built as `expansion`:
/// the inference operator, and no outer-scope tensors to wire (tract's closures, which only
/// operators with subgraphs have).
pub(super) fn parsed(
    expansion: impl Expansion,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(expansion), vec![]))
}
