//! Layers with synthetic-gradient backward passes over NHWC `ndarray` batches, the
//! network that chains them, passes over batches in caller-owned workspaces, the loss
//! and the optimiser.

pub mod act;
pub mod gemm;
pub mod init;
pub mod interval;
pub mod kernels;
pub mod layer;
pub mod layers;
pub mod loss;
pub mod network;
pub mod optim;
pub mod pass;
pub mod trig;
pub mod winograd;
pub mod winograd4;
pub mod workspace;

pub use act::GradMode;
pub use init::Init;
pub use layer::{Backward, Forward, Layer};
pub use network::Network;
pub use pass::{Backprop, Gradients, Pass, Totals};
pub use workspace::Workspace;
