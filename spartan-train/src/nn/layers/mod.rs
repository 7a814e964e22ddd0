//! The layer kinds, one file each, and [`build`], the one place a spec becomes a layer.

mod affine;
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

use super::layer::Layer;
use spartan_core::filter::FilterKind;
use spartan_core::spec::{LayerSpec, Shape};
use std::sync::Arc;

/// The layer `spec` describes, between samples of shape `input` and `output`.
pub fn build(spec: LayerSpec, input: Shape, output: Shape) -> Arc<dyn Layer> {
    match spec {
        LayerSpec::Filter(spec) if spec.kind == FilterKind::Conv => {
            Arc::new(ConvFilter { spec, input })
        }
        LayerSpec::Filter(spec) => Arc::new(OffsetFilter {
            spec,
            input,
            output,
        }),
        LayerSpec::Conv(spec) => Arc::new(Conv {
            spec,
            input,
            output,
        }),
        LayerSpec::MaxPool(spec) => Arc::new(MaxPool {
            spec,
            input,
            output,
        }),
        LayerSpec::Dense(spec) => Arc::new(Dense { spec, input }),
    }
}
