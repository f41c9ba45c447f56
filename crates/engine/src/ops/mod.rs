//! lookout's tract operators.

pub mod conv;
pub mod qbinary;
pub mod qgemv;
pub mod qunary;
pub mod softmax;
