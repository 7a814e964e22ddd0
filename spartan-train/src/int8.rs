//! Running `spartan-core`'s int8 path on the host: many images in parallel, each with
//! its own arena, and as a black-box oracle.

use crate::attack::Oracle;
use ndarray::ArrayView4;
use rayon::prelude::*;
use spartan_core::int8::Int8Model;

/// Images per parallel task.
const TASK: usize = 32;

/// An int8 model ready to classify on the host.
pub struct Int8Runner<'a> {
    /// The validated model (borrowing the file bytes).
    pub model: Int8Model<'a>,
}

/// Raw pixel of a network input value: the device sees `u8` images, so real-valued
/// (e.g. adversarial) images are rounded to the pixel grid.
pub fn to_pixel(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

impl<'a> Int8Runner<'a> {
    /// Parses and validates an int8 model file.
    pub fn load(bytes: &'a [u8]) -> Result<Self, spartan_core::Error> {
        Ok(Int8Runner {
            model: Int8Model::load(bytes)?,
        })
    }

    /// Classes and `i8` logits of `n` images of raw pixels.
    pub fn run(&self, pixels: &[u8], n: usize) -> (Vec<u8>, Vec<i8>) {
        let len = self.model.input_len();
        let classes = self.model.classes();
        let mut logits = vec![0i8; n * classes];
        let mut preds = vec![0u8; n];
        pixels[..n * len]
            .par_chunks(TASK * len)
            .zip(logits.par_chunks_mut(TASK * classes))
            .zip(preds.par_chunks_mut(TASK))
            .for_each(|((px, lg), pr)| {
                let mut arena = vec![0u8; self.model.arena_len()];
                for ((img, l), p) in px
                    .chunks(len)
                    .zip(lg.chunks_mut(classes))
                    .zip(pr.iter_mut())
                {
                    // Sizes come from the model itself, so this cannot fail.
                    *p = self.model.infer(img, &mut arena, l).unwrap_or(0) as u8;
                }
            });
        (preds, logits)
    }
}

impl Oracle for Int8Runner<'_> {
    fn classify(&mut self, x: ArrayView4<'_, f32>) -> Vec<u8> {
        let pixels: Vec<u8> = x.iter().map(|&v| to_pixel(v)).collect();
        self.run(&pixels, x.dim().0).0
    }
}
