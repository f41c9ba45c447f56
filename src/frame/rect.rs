//! Rectangles given as fractions of a frame (`[x, y, width, height]`, 0..1 from the top
//! left), turned into whole pixels of a frame of a given size: shared by the region
//! validation ([`crate::source::regions`]) and the crops ([`crate::model::crop`]).

/// A region's rectangle in pixels of a `width` x `height` frame: `(x, y, w, h)`, at least one
/// pixel, inside the frame.
pub fn pixels(rect: [f64; 4], width: u32, height: u32) -> (u32, u32, u32, u32) {
    let (fw, fh) = (f64::from(width), f64::from(height));
    let x = ((rect[0] * fw).round() as u32).min(width.saturating_sub(1));
    let y = ((rect[1] * fh).round() as u32).min(height.saturating_sub(1));
    let x1 = (((rect[0] + rect[2]) * fw).round() as u32).clamp(x + 1, width.max(x + 1));
    let y1 = (((rect[1] + rect[3]) * fh).round() as u32).clamp(y + 1, height.max(y + 1));
    (x, y, x1 - x, y1 - y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_rectangles_stay_inside_the_frame() {
        assert_eq!(pixels([0.0, 0.0, 1.0, 1.0], 640, 480), (0, 0, 640, 480));
        assert_eq!(
            pixels([0.5, 0.25, 0.5, 0.5], 640, 480),
            (320, 120, 320, 240)
        );
        // A sliver still gets one pixel; the edge is never passed.
        assert_eq!(pixels([0.999, 0.0, 0.001, 0.001], 100, 100), (99, 0, 1, 1));
    }
}
