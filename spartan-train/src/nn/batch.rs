//! Splitting a batch into a fixed number of contiguous chunks for rayon.
//!
//! The chunk count does not depend on the number of threads, and per-chunk partial
//! gradients are summed in chunk order, so results are bit-identical whatever the
//! machine: a seeded run is reproducible.

/// Most chunks a batch is split into.
pub const MAX_CHUNKS: usize = 8;

/// Samples per chunk for a batch of `batch` samples.
pub fn chunk_len(batch: usize) -> usize {
    batch.div_ceil(MAX_CHUNKS).max(1)
}

/// Number of chunks for a batch.
pub fn chunk_count(batch: usize) -> usize {
    batch.div_ceil(chunk_len(batch))
}

/// `data` (batch × per_sample) as per-chunk slices.
pub fn chunks(data: &[f32], per_sample: usize, batch: usize) -> impl Iterator<Item = &[f32]> {
    data.chunks(chunk_len(batch) * per_sample.max(1))
}

/// `data` (batch × per_sample) as per-chunk mutable slices.
pub fn chunks_mut(
    data: &mut [f32],
    per_sample: usize,
    batch: usize,
) -> impl Iterator<Item = &mut [f32]> {
    data.chunks_mut(chunk_len(batch) * per_sample.max(1))
}

/// Like [`chunks_mut`], but yields `None` for every chunk when `data` is absent.
pub fn optional_chunks_mut(
    data: Option<&mut [f32]>,
    per_sample: usize,
    batch: usize,
) -> Vec<Option<&mut [f32]>> {
    match data {
        Some(d) => chunks_mut(d, per_sample, batch).map(Some).collect(),
        None => (0..chunk_count(batch)).map(|_| None).collect(),
    }
}

/// Sums per-chunk partials into `total`, in chunk order.
pub fn sum_partials<'a>(total: &mut [f32], partials: impl Iterator<Item = &'a [f32]>) {
    total.fill(0.0);
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
}
