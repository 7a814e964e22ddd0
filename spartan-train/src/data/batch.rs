//! Labelled images: the one container of data loading, training and attacks.
//!
//! A data set read from IDX files is a `Batch<u8>` (raw pixels, a quarter of the memory
//! of floats); what the network reads, and what attacks make, is a `Batch<f32>` of
//! values in `[0, 1]`. Both are NHWC [`Array4`]s, so the shape travels with the data.

use super::DataError;
use ndarray::{s, Array4, ArrayView4, Axis};
use spartan_core::filter::pixel_to_unit;
use spartan_core::spec::Shape;
use std::ops::Range;

/// What an image holds: raw pixels (`u8`, as IDX files and devices have them) or the
/// network's input values (`f32` in `[0, 1]`).
pub trait Pixel: Copy + Send + Sync + 'static {
    /// The network's input value for this element (`u8 / 255`, the core's rule).
    fn to_unit(self) -> f32;
}

impl Pixel for u8 {
    fn to_unit(self) -> f32 {
        pixel_to_unit(self)
    }
}

impl Pixel for f32 {
    fn to_unit(self) -> f32 {
        self
    }
}

/// Labelled images, NHWC, in standard (row-major) layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    images: Array4<T>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Where it came from, for messages and reports.
    pub name: String,
}

/// A data set as read from IDX files: raw `u8` pixels.
pub type Dataset = Batch<u8>;

impl<T: Pixel> Batch<T> {
    /// Images (`n × h × w × c`) with one label each.
    ///
    /// # Panics
    /// When the label count differs from the image count, or an image side or the
    /// channel count exceeds `u16::MAX` (a caller's bug: data read from files is
    /// checked by [`from_idx`](Batch::from_idx) first).
    pub fn new(images: Array4<T>, labels: Vec<u8>, name: impl Into<String>) -> Self {
        assert_eq!(images.dim().0, labels.len(), "one label per image");
        let (_, h, w, c) = images.dim();
        assert!(
            [h, w, c].iter().all(|&d| d <= usize::from(u16::MAX)),
            "image shape {h}×{w}×{c} is too large"
        );
        Batch {
            images: images.as_standard_layout().into_owned(),
            labels,
            name: name.into(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one image.
    pub fn shape(&self) -> Shape {
        let (_, h, w, c) = self.images.dim();
        // `new` keeps every side within u16.
        Shape::new(h as u16, w as u16, c as u16)
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.shape().len()
    }

    /// All images.
    pub fn images(&self) -> ArrayView4<'_, T> {
        self.images.view()
    }

    /// Values of image `i`, row-major HWC (what goes over a wire or into an arena).
    pub fn image(&self, i: usize) -> &[T] {
        let n = self.image_len();
        &self.values()[i * n..(i + 1) * n]
    }

    /// All images back to back, row-major NHWC (what a device or an arena reads).
    pub fn values(&self) -> &[T] {
        // Standard layout is an invariant of every constructor.
        self.images.as_slice().unwrap_or(&[])
    }

    /// Images `range` (clamped to the batch) as a new batch.
    pub fn slice(&self, range: Range<usize>) -> Self {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        Batch {
            images: self.images.slice(s![start..end, .., .., ..]).to_owned(),
            labels: self.labels[start..end].to_vec(),
            name: format!("{}[{start}..{end}]", self.name),
        }
    }

    /// The first `n` images (or all).
    pub fn take(&self, n: usize) -> Self {
        if n >= self.len() {
            return self.clone();
        }
        self.slice(0..n)
    }

    /// Appends images with their labels.
    ///
    /// # Panics
    /// When the image shape differs or the counts disagree (a caller's bug).
    pub fn extend(&mut self, images: ArrayView4<'_, T>, labels: &[u8]) {
        assert_eq!(images.dim().0, labels.len(), "one label per image");
        self.images
            .append(Axis(0), images)
            .expect("appended images have the batch's shape");
        self.labels.extend_from_slice(labels);
    }

    /// Consecutive pieces of at most `size` images with their labels.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = (ArrayView4<'_, T>, &[u8])> {
        let size = size.max(1);
        self.images
            .axis_chunks_iter(Axis(0), size)
            .zip(self.labels.chunks(size))
    }

    /// The images as network input (`[0, 1]`), labels alike.
    pub fn to_input(&self) -> Batch<f32> {
        Batch {
            images: self.images.mapv(Pixel::to_unit),
            labels: self.labels.clone(),
            name: self.name.clone(),
        }
    }

    /// Images `indices`, in that order, as network input written into `buf` (reused
    /// between calls), and their labels appended to `labels` (cleared first).
    pub fn gather_input<'b>(
        &self,
        indices: &[usize],
        buf: &'b mut Vec<f32>,
        labels: &mut Vec<u8>,
    ) -> ArrayView4<'b, f32> {
        buf.clear();
        labels.clear();
        for &i in indices {
            buf.extend(self.image(i).iter().map(|&p| p.to_unit()));
            labels.push(self.labels[i]);
        }
        let s = self.shape();
        let dim = (
            indices.len(),
            s.height as usize,
            s.width as usize,
            s.channels as usize,
        );
        ArrayView4::from_shape(dim, buf.as_slice()).expect("buf holds the gathered images")
    }

    /// Number of classes the labels imply (largest label + 1).
    pub fn classes(&self) -> usize {
        self.labels
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
    }

    /// Checks every label is below `classes`.
    pub fn check_classes(&self, classes: usize) -> Result<(), DataError> {
        match self.labels.iter().position(|&l| l as usize >= classes) {
            None => Ok(()),
            Some(index) => Err(DataError::LabelOutOfRange {
                source_name: self.name.clone(),
                index,
                label: self.labels[index],
                classes,
            }),
        }
    }

    /// Checks the images have the shape a model expects.
    pub fn check_shape(&self, want: Shape) -> Result<(), DataError> {
        let got = self.shape();
        if got == want {
            return Ok(());
        }
        let hwc = |s: Shape| format!("{}×{}×{}", s.height, s.width, s.channels);
        Err(DataError::ImageSize {
            what: self.name.clone(),
            got: hwc(got),
            want: hwc(want),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Batch<u8> {
        let images = Array4::from_shape_fn((5, 2, 3, 1), |(n, y, x, _)| (n * 6 + y * 3 + x) as u8);
        Batch::new(images, vec![0, 1, 2, 1, 0], "tiny")
    }

    #[test]
    fn slices_chunks_and_gathers_keep_images_with_their_labels() {
        let b = tiny();
        assert_eq!(b.shape(), Shape::new(2, 3, 1));
        assert_eq!(b.image(2), &[12, 13, 14, 15, 16, 17]);
        let s = b.slice(3..99);
        assert_eq!((s.len(), s.labels.clone()), (2, vec![1, 0]));
        assert_eq!(s.image(0), b.image(3));
        let sizes: Vec<usize> = b.chunks(2).map(|(x, y)| x.dim().0 + 10 * y.len()).collect();
        assert_eq!(sizes, [22, 22, 11]);
        let (mut buf, mut labels) = (Vec::new(), Vec::new());
        let x = b.gather_input(&[4, 1], &mut buf, &mut labels);
        assert_eq!(x.dim(), (2, 2, 3, 1));
        assert_eq!(x[[1, 0, 1, 0]], pixel_to_unit(7));
        assert_eq!(labels, [0, 1]);
        let f = b.to_input();
        assert_eq!(f.images()[[4, 1, 2, 0]], pixel_to_unit(29));
        assert_eq!(f.classes(), 3);
    }
}
