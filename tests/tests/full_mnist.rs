//! Full MNIST, read from `SPARTAN_DATA` or `../shared/data/mnist` at run time (nothing
//! about its location is compiled in): the reader sees all of it, as the files state.

use spartan_core::spec::Shape;
use spartan_e2e::full_mnist_dir;
use spartan_train::data::load_dir;

#[test]
fn full_mnist_loads_whole() {
    let Some(dir) = full_mnist_dir() else {
        return;
    };
    let s = load_dir(&dir).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
    assert_eq!(s.train.shape(), Shape::new(28, 28, 1));
    assert_eq!((s.train.classes(), s.test.classes()), (10, 10));
    // The embedded subset is the head of the full set.
    let sub = spartan_train::data::load_embedded().unwrap();
    assert_eq!(sub.train.image(9_999), s.train.image(9_999));
    assert_eq!(sub.test.labels[..], s.test.labels[..2_000]);
}
