//! Data sets: MNIST-format IDX files from a directory, or the embedded default subset.

mod batch;
pub mod idx;

pub use batch::{Batch, Dataset, Pixel};
use idx::IdxError;
use ndarray::Array4;
use std::path::{Path, PathBuf};

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file is unreadable or malformed.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// The `--data` directory does not exist.
    #[error("data directory {0} does not exist")]
    MissingDir(PathBuf),
    /// A required file is absent.
    #[error("{dir}: no {what} file (looked for {looked})")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// Which file.
        what: &'static str,
        /// Names tried.
        looked: String,
    },
    /// Images and labels disagree in number.
    #[error("{images}: {n_images} images, but {labels}: {n_labels} labels")]
    CountMismatch {
        /// Images file.
        images: String,
        /// Number of images.
        n_images: usize,
        /// Labels file.
        labels: String,
        /// Number of labels.
        n_labels: usize,
    },
    /// A label is not a valid class index.
    #[error(
        "{source_name}: label {label} of example {index} is out of range for {classes} classes"
    )]
    LabelOutOfRange {
        /// Which data.
        source_name: String,
        /// Example index.
        index: usize,
        /// The label.
        label: u8,
        /// Number of classes allowed.
        classes: usize,
    },
    /// Image sizes differ from what is needed.
    #[error("{what}: images are {got_h}×{got_w}, expected {want_h}×{want_w}")]
    ImageSize {
        /// Which data.
        what: String,
        /// Height found.
        got_h: usize,
        /// Width found.
        got_w: usize,
        /// Height wanted.
        want_h: usize,
        /// Width wanted.
        want_w: usize,
    },
    /// The file holds no example.
    #[error("{0}: holds no example")]
    Empty(String),
}

impl Dataset {
    /// Builds a data set from decoded IDX images (rank 3) and labels (rank 1).
    pub fn from_idx(
        images: idx::IdxArray,
        labels: idx::IdxArray,
        images_name: &str,
        labels_name: &str,
    ) -> Result<Dataset, DataError> {
        let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
        if labels.dims[0] != n {
            return Err(DataError::CountMismatch {
                images: images_name.to_string(),
                n_images: n,
                labels: labels_name.to_string(),
                n_labels: labels.dims[0],
            });
        }
        if n == 0 || h == 0 || w == 0 {
            return Err(DataError::Empty(images_name.to_string()));
        }
        if u16::try_from(h).is_err() || u16::try_from(w).is_err() {
            return Err(DataError::Empty(format!(
                "{images_name} (images of {h}×{w} are too large)"
            )));
        }
        let images = Array4::from_shape_vec((n, h, w, 1), images.data)
            .map_err(|_| DataError::Empty(format!("{images_name} (header and data disagree)")))?;
        Ok(Batch::new(images, labels.data, images_name))
    }
}

/// A training split and a test split.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training examples.
    pub train: Dataset,
    /// Test examples.
    pub test: Dataset,
    /// Human description of the source.
    pub source: String,
}

/// File stems of the four MNIST files.
const FILES: [(&str, &str); 4] = [
    ("training images", "train-images-idx3-ubyte"),
    ("training labels", "train-labels-idx1-ubyte"),
    ("test images", "t10k-images-idx3-ubyte"),
    ("test labels", "t10k-labels-idx1-ubyte"),
];

fn find(dir: &Path, what: &'static str, stem: &str) -> Result<PathBuf, DataError> {
    let names = [
        stem.to_string(),
        format!("{stem}.gz"),
        stem.replacen("-idx", ".idx", 1),
        format!("{}.gz", stem.replacen("-idx", ".idx", 1)),
    ];
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            what,
            looked: names.join(", "),
        })
}

fn load_pair(dir: &Path, images: usize, labels: usize) -> Result<Dataset, DataError> {
    let ip = find(dir, FILES[images].0, FILES[images].1)?;
    let lp = find(dir, FILES[labels].0, FILES[labels].1)?;
    Dataset::from_idx(
        idx::read(&ip, 3)?,
        idx::read(&lp, 1)?,
        &ip.display().to_string(),
        &lp.display().to_string(),
    )
}

fn checked_splits(train: Dataset, test: Dataset, source: String) -> Result<Splits, DataError> {
    test.check_shape(train.shape())?;
    let classes = train.classes().max(test.classes());
    train.check_classes(classes)?;
    Ok(Splits {
        train,
        test,
        source,
    })
}

/// Loads the four MNIST-format files from `dir` (raw or `.gz`).
pub fn load_dir(dir: &Path) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingDir(dir.to_path_buf()));
    }
    let train = load_pair(dir, 0, 1)?;
    let test = load_pair(dir, 2, 3)?;
    checked_splits(train, test, dir.display().to_string())
}

/// The subset committed under `data/` (first 10,000 training and 2,000 test images of
/// MNIST), compiled into the binary so the CLI works anywhere with no download.
pub mod embedded {
    /// Training images (gzipped IDX).
    pub const TRAIN_IMAGES: &[u8] =
        include_bytes!("../../../data/mnist-subset/train-images-idx3-ubyte.gz");
    /// Training labels (gzipped IDX).
    pub const TRAIN_LABELS: &[u8] =
        include_bytes!("../../../data/mnist-subset/train-labels-idx1-ubyte.gz");
    /// Test images (gzipped IDX).
    pub const TEST_IMAGES: &[u8] =
        include_bytes!("../../../data/mnist-subset/t10k-images-idx3-ubyte.gz");
    /// Test labels (gzipped IDX).
    pub const TEST_LABELS: &[u8] =
        include_bytes!("../../../data/mnist-subset/t10k-labels-idx1-ubyte.gz");
}

fn decode_embedded(bytes: &[u8], name: &str, rank: usize) -> Result<idx::IdxArray, DataError> {
    use std::io::Read;
    let path = PathBuf::from(name);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .map_err(|source| IdxError::Gzip {
            path: path.clone(),
            source,
        })?;
    let a = idx::parse(&raw, &path)?;
    if a.dims.len() != rank {
        return Err(IdxError::Rank {
            path,
            expected: rank,
            got: a.dims.len(),
        }
        .into());
    }
    Ok(a)
}

/// The embedded default subset.
pub fn load_embedded() -> Result<Splits, DataError> {
    let pair = |i: &[u8], l: &[u8], name: &str| -> Result<Dataset, DataError> {
        let iname = format!("embedded {name} images");
        let lname = format!("embedded {name} labels");
        Dataset::from_idx(
            decode_embedded(i, &iname, 3)?,
            decode_embedded(l, &lname, 1)?,
            &iname,
            &lname,
        )
    };
    let train = pair(embedded::TRAIN_IMAGES, embedded::TRAIN_LABELS, "training")?;
    let test = pair(embedded::TEST_IMAGES, embedded::TEST_LABELS, "test")?;
    checked_splits(
        train,
        test,
        "embedded MNIST subset (10,000 train / 2,000 test)".to_string(),
    )
}

/// `--data DIR` if given, else the embedded subset.
pub fn load(dir: Option<&Path>) -> Result<Splits, DataError> {
    match dir {
        Some(d) => load_dir(d),
        None => load_embedded(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_subset_loads_with_expected_sizes() {
        let s = load_embedded().unwrap();
        assert_eq!(s.train.len(), 10_000);
        assert_eq!(s.test.len(), 2_000);
        assert_eq!(s.train.shape(), spartan_core::spec::Shape::new(28, 28, 1));
        assert_eq!(s.train.classes(), 10);
        // Every class is present in a sensible proportion.
        for c in 0..10u8 {
            let n = s.train.labels.iter().filter(|&&l| l == c).count();
            assert!((700..1400).contains(&n), "class {c}: {n}");
        }
    }

    #[test]
    fn mismatched_counts_and_labels_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let write =
            |name: &str, bytes: Vec<u8>| std::fs::write(dir.path().join(name), bytes).unwrap();
        write("train-images-idx3-ubyte", idx::encode(&[3, 2, 2], &[0; 12]));
        write("train-labels-idx1-ubyte", idx::encode(&[2], &[0, 1]));
        write("t10k-images-idx3-ubyte", idx::encode(&[1, 2, 2], &[0; 4]));
        write("t10k-labels-idx1-ubyte", idx::encode(&[1], &[1]));
        let e = load_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("3 images, but"), "{e}");
        write("train-labels-idx1-ubyte", idx::encode(&[3], &[0, 1, 7]));
        let s = load_dir(dir.path()).unwrap();
        let e = s.train.check_classes(5).unwrap_err();
        assert!(e.to_string().contains("label 7 of example 2"), "{e}");
        let e = load_dir(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("no test labels file"), "{e}");
    }
}
