//! The layer kinds, one file each, and [`build`], the one place a spec becomes a layer.

pub mod conv;
pub mod conv_filter;
pub mod dense;
pub mod offset_filter;
pub mod pool;

pub use conv::Conv;
pub use conv_filter::ConvFilter;
pub use dense::Dense;
pub use offset_filter::OffsetFilter;
pub use pool::MaxPool;

use super::layer::{Layer, Params};
use spartan_core::filter::FilterKind;
use spartan_core::spec::{LayerSpec, Shape};

/// The layer `spec` describes, between samples of shape `input` and `output`, with
/// fresh or given parameters.
pub fn build(spec: LayerSpec, input: Shape, output: Shape, params: Params<'_>) -> Box<dyn Layer> {
    match spec {
        LayerSpec::Filter(f) if f.kind == FilterKind::Conv => {
            Box::new(ConvFilter::new(f, input, output, params))
        }
        LayerSpec::Filter(f) => Box::new(OffsetFilter::new(f, input, output, params)),
        LayerSpec::Conv(c) => Box::new(Conv::new(c, input, output, params)),
        LayerSpec::MaxPool(p) => Box::new(MaxPool::new(p, input, output)),
        LayerSpec::Dense(d) => Box::new(Dense::new(d, input, params)),
    }
}
