//! Adversarial attacks: gradient attacks (FGSM, PGD) with BPDA through step layers, and
//! the surrogate black-box attack of Papernot et al. as run by the paper (docs/attacks.md).

pub mod blackbox;
pub mod eps;
pub mod gradient;
pub mod oracle;
pub mod sweep;

pub use eps::parse_eps;
pub use oracle::Oracle;
