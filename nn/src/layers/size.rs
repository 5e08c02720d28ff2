//! [`Size2`]: a 2-D size argument given as PyTorch takes one, a single number or a pair.

/// A `[height, width]` size argument (kernel size, stride, padding, dilation) that accepts what
/// PyTorch's `_pair` accepts: one number for both sides (`2`), an array (`[2, 3]`) or a tuple
/// (`(2, 3)`). Constructors take `impl Into<Size2>`, so `MaxPool2d::new(2)` and
/// `MaxPool2d::new([2, 1])` both work.
///
/// ```
/// use stapes_nn::layers::Size2;
/// assert_eq!(Size2::from(3).0, [3, 3]);
/// assert_eq!(Size2::from((2, 1)).0, [2, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Size2(pub [usize; 2]);

impl From<usize> for Size2 {
    fn from(v: usize) -> Size2 {
        Size2([v, v])
    }
}

impl From<[usize; 2]> for Size2 {
    fn from(v: [usize; 2]) -> Size2 {
        Size2(v)
    }
}

impl From<(usize, usize)> for Size2 {
    fn from((h, w): (usize, usize)) -> Size2 {
        Size2([h, w])
    }
}

impl From<Size2> for [usize; 2] {
    fn from(s: Size2) -> [usize; 2] {
        s.0
    }
}
