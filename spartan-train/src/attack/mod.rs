//! Adversarial attacks: gradient attacks (FGSM, PGD) with BPDA through step layers, the
//! exact search over a binary filter's reachable codes, the per-image worst case over
//! all of them, and the surrogate black-box attack of Papernot et al. as run by the
//! paper (docs/attacks.md).

pub mod blackbox;
pub mod eps;
pub mod filter_codes;
pub mod gradient;
pub mod oracle;
pub mod pgd;
pub mod sweep;
pub mod threat;
pub mod white_box;

pub use eps::parse_eps;
pub use oracle::Oracle;
