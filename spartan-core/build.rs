//! Sets `cfg(spartan_dsp)` on Armv7E-M targets (Cortex-M4/M7), whose DSP extension
//! (`SMLAD`, `SXTB16`, `SMMULR`…) the int8 kernels use. Stable Rust has no cfg for it:
//! Arm target features are not exposed, so the target name decides (as the
//! `cortex-m` crate does).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(spartan_dsp)");
    println!("cargo::rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") {
        println!("cargo::rustc-cfg=spartan_dsp");
    }
}
