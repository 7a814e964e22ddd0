//! End-to-end tests of the workspace live in `tests/`; this library holds what they share.

use std::path::PathBuf;

/// Where full MNIST is, decided at run time: `$SPARTAN_DATA`, else `../shared/data/mnist`
/// beside the repository root. `None`, with a note on stderr saying where it looked,
/// when the four IDX files are not there (tests that need it then say they skipped).
pub fn full_mnist_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SPARTAN_DATA") {
        Some(d) => PathBuf::from(d),
        // This crate is `tests/` of the repository: its parent is the root.
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist"),
    };
    let present = ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
        .iter()
        .any(|f| dir.join(f).is_file());
    if !present {
        eprintln!(
            "full MNIST not found in {} (set SPARTAN_DATA to its directory): skipped",
            dir.display()
        );
        return None;
    }
    Some(dir)
}
