//! The buffers passes need, owned by the caller and reused across calls.

use super::network::Network;
use super::pass::CHUNK;
use std::ops::Range;
use std::sync::Mutex;

/// Buffers of one worker thread for one chunk, indexed by layer.
#[derive(Debug, Default)]
pub(super) struct ChunkBuffers {
    /// `acts[i]`: input of layer `i` (`acts[i + 1]` its output).
    pub(super) acts: Vec<Vec<f32>>,
    /// What layer `i`'s forward leaves for its backward.
    pub(super) scratch: Vec<Vec<f32>>,
    /// `grads[i]`: loss gradient with respect to `acts[i]`.
    pub(super) grads: Vec<Vec<f32>>,
}

/// Grows `bufs[i]` to at least `len` values.
fn fit(bufs: &mut Vec<Vec<f32>>, i: usize, len: usize) {
    if bufs.len() <= i {
        bufs.resize_with(i + 1, Vec::new);
    }
    if bufs[i].len() < len {
        bufs[i].resize(len, 0.0);
    }
}

impl ChunkBuffers {
    /// Makes room for `layers` of `net` over one chunk.
    pub(super) fn fit(&mut self, net: &Network, layers: &Range<usize>, backward: bool) {
        let shapes = net.shapes().iter().enumerate();
        for (i, s) in shapes.take(layers.end + 1).skip(layers.start) {
            fit(&mut self.acts, i, CHUNK * s.len());
            if backward {
                fit(&mut self.grads, i, CHUNK * s.len());
            }
        }
        for i in layers.clone() {
            fit(&mut self.scratch, i, CHUNK * net.layers()[i].scratch_len());
        }
    }
}

/// The buffers passes need, owned by the caller and reused across calls (as
/// `spartan-core`'s arena): per-thread chunk buffers, partial gradients, the outputs
/// and the input gradients of the last pass. Grows to fit whatever it is used with.
#[derive(Debug, Default)]
pub struct Workspace {
    pub(super) threads: Vec<Mutex<ChunkBuffers>>,
    pub(super) partials: Vec<Vec<f32>>,
    pub(super) output: Vec<f32>,
    pub(super) input_grads: Vec<f32>,
    /// What each layer's `prepare` gave for the last pass (reused: fresh buffers of
    /// this size are mapped and faulted in at every call, a fifth of a batch-1
    /// inference).
    pub(super) prepared: Vec<Vec<f32>>,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }
}
