//! A session's per-operator profile (`lookout bench --profile`): the engine's node timer
//! ([`lookout_engine::profile`]) run on the session's own tract state.

use tract_onnx::prelude::Tensor;

pub use lookout_engine::profile::{render, NodeTime, OpTypeTime, Profile};

use super::{ModelError, Session};

impl Session {
    /// Runs `tensor` through the model `warmup + runs` times, timing every node of the plan on
    /// the last `runs`.
    pub fn profile(
        &mut self,
        tensor: &Tensor,
        warmup: usize,
        runs: usize,
    ) -> Result<Profile, ModelError> {
        lookout_engine::profile::profile(&mut self.state, tensor, warmup, runs)
            .map_err(|e| ModelError::Infer(e.into()))
    }
}
