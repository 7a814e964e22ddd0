//! Layers with backward passes, the loss and the optimiser.

pub mod act;
pub mod conv;
pub mod dense;
pub mod filter;
pub mod gemm;
pub mod kernels;
pub mod loss;
pub mod network;
pub mod optim;
pub mod pool;

pub use network::Network;
