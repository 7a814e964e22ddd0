//! Data sets: MNIST-format IDX files from a directory, or the embedded default subset.

mod batch;
pub mod idx;

pub use batch::{Batch, Dataset, Pixel};
use flate2::read::MultiGzDecoder;
use idx::{IdxError, IdxReader};
use ndarray::Array4;
use std::io::Read;
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
    /// Image shapes differ from what is needed.
    #[error("{what}: images are {got}, expected {want} (height×width×channels)")]
    ImageSize {
        /// Which data.
        what: String,
        /// Shape found, `h×w×c`.
        got: String,
        /// Shape wanted, `h×w×c`.
        want: String,
    },
    /// The file holds no example.
    #[error("{0}: holds no example")]
    Empty(String),
}

/// Checks there is one label per image.
fn check_counts(
    n_images: usize,
    n_labels: usize,
    images: &str,
    labels: &str,
) -> Result<(), DataError> {
    if n_images == n_labels {
        return Ok(());
    }
    Err(DataError::CountMismatch {
        images: images.to_string(),
        n_images,
        labels: labels.to_string(),
        n_labels,
    })
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
        check_counts(n, labels.dims[0], images_name, labels_name)?;
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

/// One of a data set's two parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training images and labels.
    Train,
    /// The test images and labels.
    Test,
}

impl Split {
    /// What the part's images and labels are called, and their MNIST file stems.
    fn files(self) -> [(&'static str, &'static str); 2] {
        match self {
            Split::Train => [
                ("training images", "train-images-idx3-ubyte"),
                ("training labels", "train-labels-idx1-ubyte"),
            ],
            Split::Test => [
                ("test images", "t10k-images-idx3-ubyte"),
                ("test labels", "t10k-labels-idx1-ubyte"),
            ],
        }
    }

    /// The embedded subset's gzipped images and labels of this part.
    fn embedded(self) -> [&'static [u8]; 2] {
        match self {
            Split::Train => [embedded::TRAIN_IMAGES, embedded::TRAIN_LABELS],
            Split::Test => [embedded::TEST_IMAGES, embedded::TEST_LABELS],
        }
    }
}

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

/// Images and labels from two IDX streams whose headers are read: the counts are
/// compared before any data is read.
fn read_pair<I: Read, L: Read>(
    images: IdxReader<I>,
    labels: IdxReader<L>,
    images_name: &str,
    labels_name: &str,
) -> Result<Dataset, DataError> {
    images.check_rank(3)?;
    labels.check_rank(1)?;
    check_counts(images.dims()[0], labels.dims()[0], images_name, labels_name)?;
    Dataset::from_idx(
        images.read_data()?,
        labels.read_data()?,
        images_name,
        labels_name,
    )
}

/// One part of the MNIST-format files in `dir` (raw or `.gz`), reading only its two
/// files.
pub fn load_dir_split(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingDir(dir.to_path_buf()));
    }
    let [(images, i_stem), (labels, l_stem)] = split.files();
    let ip = find(dir, images, i_stem)?;
    let lp = find(dir, labels, l_stem)?;
    read_pair(
        IdxReader::open(&ip)?,
        IdxReader::open(&lp)?,
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
    let train = load_dir_split(dir, Split::Train)?;
    let test = load_dir_split(dir, Split::Test)?;
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

/// One part of the embedded default subset.
pub fn load_embedded_split(split: Split) -> Result<Dataset, DataError> {
    let [(images, _), (labels, _)] = split.files();
    let [i, l] = split.embedded();
    let (iname, lname) = (format!("embedded {images}"), format!("embedded {labels}"));
    let open =
        |bytes, name: &str| IdxReader::new(MultiGzDecoder::new(bytes), Path::new(name), true);
    read_pair(open(i, &iname)?, open(l, &lname)?, &iname, &lname)
}

/// The embedded default subset.
pub fn load_embedded() -> Result<Splits, DataError> {
    let train = load_embedded_split(Split::Train)?;
    let test = load_embedded_split(Split::Test)?;
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

/// One part of `--data DIR` if given, else of the embedded subset: what a command that
/// needs only the test images (or only the training images) loads.
pub fn load_split(dir: Option<&Path>, split: Split) -> Result<Dataset, DataError> {
    match dir {
        Some(d) => load_dir_split(d, split),
        None => load_embedded_split(split),
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
