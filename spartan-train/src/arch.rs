//! Resolving `--arch`: a named architecture of the paper or a TOML spec file, plus the
//! `--beta/--sf/--sigma` overrides.

use crate::fsutil::{read_capped, ReadError};
use spartan_core::activation::Activation;
use spartan_core::spec::{ArchSpec, LayerSpec, NamedParams, NAMED_ARCHITECTURES};
use std::path::Path;

/// Largest spec file read (a spec is a few hundred bytes).
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Why an architecture could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// Neither a known name nor a readable file.
    #[error("unknown architecture {0:?}: use one of {names} or a path to a .toml spec", names = NAMED_ARCHITECTURES.join(", "))]
    Unknown(String),
    /// The spec file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The spec file is not UTF-8 text.
    #[error("{path}: not a text file")]
    NotText {
        /// The file.
        path: String,
    },
    /// The spec file is not valid TOML for an architecture (unknown keys included: a
    /// typo must not fall back to a default silently).
    #[error(
        "{path}{}: not a valid architecture spec: {message}",
        .line.map(|l| format!(", line {l}")).unwrap_or_default()
    )]
    Toml {
        /// The file.
        path: String,
        /// Where in the file (1-based), when the parser knows.
        line: Option<usize>,
        /// Parser message.
        message: String,
    },
    /// The spec parses but is inconsistent.
    #[error(transparent)]
    Invalid(#[from] spartan_core::Error),
    /// An override value is out of range.
    #[error("{0}")]
    BadOverride(String),
}

/// Optional hyper-parameter overrides from the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Filter thresholds per channel (β).
    pub beta: Option<u16>,
    /// Filter-regularisation scaling factor.
    pub sf: Option<f32>,
    /// σ of normal-distribution activations.
    pub sigma: Option<f32>,
}

impl Overrides {
    fn check(&self) -> Result<(), ArchError> {
        if self.beta == Some(0) || self.beta.is_some_and(|b| b > 64) {
            return Err(ArchError::BadOverride(
                "--beta must be between 1 and 64".into(),
            ));
        }
        if self.sf.is_some_and(|s| !s.is_finite() || s < 0.0) {
            return Err(ArchError::BadOverride(
                "--sf must be finite and >= 0".into(),
            ));
        }
        if self.sigma.is_some_and(|s| !s.is_finite() || s <= 0.0) {
            return Err(ArchError::BadOverride(
                "--sigma must be finite and > 0".into(),
            ));
        }
        Ok(())
    }

    /// Applies the overrides to every filter and σ-bearing activation of `spec`.
    pub fn apply(&self, spec: &mut ArchSpec) {
        let set_sigma = |a: &mut Activation| {
            if let Some(s) = self.sigma {
                *a = a.with_sigma(s);
            }
        };
        for layer in spec.layers.iter_mut() {
            match layer {
                LayerSpec::Filter(f) => {
                    if let Some(b) = self.beta {
                        f.beta = b;
                    }
                    if let Some(s) = self.sf {
                        f.sf = s;
                    }
                    set_sigma(&mut f.activation);
                }
                LayerSpec::Conv(c) => set_sigma(&mut c.activation),
                LayerSpec::Dense(d) => set_sigma(&mut d.activation),
                LayerSpec::MaxPool(_) => {}
            }
        }
    }
}

/// Parses a TOML architecture spec.
pub fn parse_toml(text: &str, path: &str) -> Result<ArchSpec, ArchError> {
    let spec: ArchSpec = toml::from_str(text).map_err(|e| ArchError::Toml {
        path: path.to_string(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: match e.message() {
            // toml's words for a `[[layers]]` entry that is not exactly one layer.
            m if m.contains("wanted exactly 1 element") => {
                "a [[layers]] entry holds one layer table (filter, conv, max-pool or \
                 dense) and no other key"
                    .to_string()
            }
            m => m.to_string(),
        },
    })?;
    spec.shapes()?;
    Ok(spec)
}

/// Renders a spec as TOML (a starting point for custom candidates).
pub fn to_toml(spec: &ArchSpec) -> String {
    toml::to_string_pretty(spec).unwrap_or_default()
}

/// Resolves `--arch` (a name or a `.toml` path) with overrides and a class count.
pub fn resolve(arch: &str, overrides: Overrides, classes: u16) -> Result<ArchSpec, ArchError> {
    overrides.check()?;
    let mut spec = match ArchSpec::named(
        arch,
        NamedParams {
            classes,
            ..NamedParams::default()
        },
    ) {
        Some(s) => s,
        None => {
            let path = Path::new(arch);
            if !path.is_file() {
                return Err(ArchError::Unknown(arch.to_string()));
            }
            let bytes = read_capped(path, MAX_SPEC_BYTES, "architecture spec", b"")?;
            let text = String::from_utf8(bytes).map_err(|_| ArchError::NotText {
                path: arch.to_string(),
            })?;
            parse_toml(&text, arch)?
        }
    };
    overrides.apply(&mut spec);
    spec.shapes()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_specs_round_trip_through_toml() {
        for name in NAMED_ARCHITECTURES {
            let spec = resolve(name, Overrides::default(), 10).unwrap();
            let text = to_toml(&spec);
            assert_eq!(parse_toml(&text, "x").unwrap(), spec, "{name}:\n{text}");
        }
    }

    #[test]
    fn overrides_reach_filters_and_sigmas() {
        let o = Overrides {
            beta: Some(6),
            sf: Some(0.5),
            sigma: Some(0.25),
        };
        let spec = resolve("candidate-b", o, 10).unwrap();
        let f = spec.filter().unwrap();
        assert_eq!((f.beta, f.sf), (6, 0.5));
        assert_eq!(f.activation, Activation::Hsnd { sigma: 0.25 });
        assert_eq!(
            spec.layers[2].activation(),
            Some(Activation::CosHsnd { sigma: 0.25 })
        );
    }

    #[test]
    fn bad_arch_inputs_are_explained() {
        let e = resolve("candidate-q", Overrides::default(), 10).unwrap_err();
        assert!(e.to_string().contains("candidate-a"), "{e}");
        let e = resolve(
            "standard",
            Overrides {
                beta: Some(0),
                ..Default::default()
            },
            10,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--beta"), "{e}");
        let e = parse_toml("input = 3", "bad.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad.toml, line 1: not a valid architecture spec"),
            "{e}"
        );
        let custom = r#"
            input = { height = 28, width = 28, channels = 1 }
            [[layers]]
            filter = { kind = "offset", beta = 2, activation = { hsnd = { sigma = 0.5 } } }
            [[layers]]
            conv = { filters = 8, kernel = 5, activation = "relu" }
            [[layers]]
            max-pool = { size = 4 }
            [[layers]]
            dense = { units = 10, activation = "linear" }
        "#;
        let spec = parse_toml(custom, "c.toml").unwrap();
        assert_eq!(spec.filter().unwrap().sf, spartan_core::filter::DEFAULT_SF);
        assert_eq!(
            spec.parameter_count().unwrap(),
            28 * 28 * 2 + 5 * 5 * 2 * 8 + 8 + 6 * 6 * 8 * 10 + 10
        );
    }

    /// Unknown keys anywhere in a spec are errors naming the key and its line; the
    /// same spec without them parses.
    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let named = to_toml(&resolve("candidate-b", Overrides::default(), 10).unwrap());
        let line_of =
            |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let cases = [
            ("dropout = 0.5\n", "kernel = 3", "dropout"),
            ("", "sf = 0.00001", "sff"),
            ("", "channels = 1", "chanels"),
            ("", "units = 50", "unit"),
            ("", "sigma = 1.0", "sigmma"),
        ];
        for (extra, target, typo) in cases {
            let text = if extra.is_empty() {
                let wrong = target.replacen(target.split(' ').next().unwrap(), typo, 1);
                named.replacen(target, &wrong, 1)
            } else {
                named.replacen(target, &format!("{target}\n{extra}"), 1)
            };
            assert_ne!(text, named, "{target} is in the spec:\n{named}");
            let e = parse_toml(&text, "x.toml").unwrap_err();
            let line = line_of(&text, typo);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("x.toml, line {line}: ")) && msg.contains(typo),
                "{typo}: {msg}\n{text}"
            );
        }
        parse_toml(&named, "x.toml").unwrap();
    }
}
