//! Anti-aliased text drawn straight onto an RGB buffer with `ab_glyph`.
//!
//! Why not let `plotters` draw the text: its `ab_glyph` font backend
//! (0.3.7) drops each glyph's left side bearing and rounds the pen position,
//! so words render with visible gaps ("baselin e", "can didate"), and its
//! `ttf` backend needs fontconfig. Laying glyphs out here with proper
//! bearings, kerning and sub-pixel positions costs ~150 lines and makes the
//! output independent of `plotters`' font code.

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};

/// Horizontal anchor of a text box relative to its reference point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum HAlign {
    Left,
    Center,
    Right,
}

/// Vertical anchor of a text box relative to its reference point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum VAlign {
    Top,
    Center,
    Bottom,
}

/// A piece of text to draw after the chart itself has been rasterised.
#[derive(Debug, Clone)]
pub(super) struct TextItem {
    pub text: String,
    /// Pixel height of the font's ascent-to-descent box.
    pub size: f32,
    /// Reference point in image pixels.
    pub at: (f32, f32),
    pub h: HAlign,
    pub v: VAlign,
    /// Rotate 90° counter-clockwise (reads bottom to top), for the y-axis
    /// title. The box is always centred on `at` when rotated.
    pub rotated: bool,
    pub color: (u8, u8, u8),
}

/// A parsed font; cheap to create (parsing only reads the table directory).
pub(super) struct TextRenderer<'f> {
    font: FontRef<'f>,
}

/// Glyphs positioned in a text-local frame: origin at the top-left of the
/// box, baseline at `ascent`.
struct Layout {
    glyphs: Vec<ab_glyph::Glyph>,
    width: f32,
    height: f32,
}

impl<'f> TextRenderer<'f> {
    /// Returns `None` if `bytes` is not a usable TrueType/OpenType font.
    pub(super) fn new(bytes: &'f [u8]) -> Option<Self> {
        FontRef::try_from_slice(bytes)
            .ok()
            .map(|font| Self { font })
    }

    fn layout(&self, text: &str, size: f32) -> Layout {
        let scale = PxScale::from(size);
        let scaled = self.font.as_scaled(scale);
        let ascent = scaled.ascent();
        let mut caret = 0.0f32;
        let mut prev: Option<GlyphId> = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars() {
            if c.is_control() {
                continue;
            }
            let id = self.font.glyph_id(c);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(caret, ascent)));
            caret += scaled.h_advance(id);
            prev = Some(id);
        }
        Layout {
            glyphs,
            width: caret,
            height: ascent - scaled.descent(),
        }
    }

    /// Width and height in pixels of `text` at `size`.
    pub(super) fn measure(&self, text: &str, size: f32) -> (f32, f32) {
        let l = self.layout(text, size);
        (l.width, l.height)
    }

    /// Blends `item` into `rgb` (`width`×`height`, 3 bytes per pixel).
    /// Pixels falling outside the image are ignored.
    pub(super) fn draw(&self, rgb: &mut [u8], width: u32, height: u32, item: &TextItem) {
        let l = self.layout(&item.text, item.size);
        let (ax, ay) = item.at;
        // Offset of the text-local origin in image space (unrotated case).
        let ox = match item.h {
            HAlign::Left => ax,
            HAlign::Center => ax - l.width / 2.0,
            HAlign::Right => ax - l.width,
        };
        let oy = match item.v {
            VAlign::Top => ay,
            VAlign::Center => ay - l.height / 2.0,
            VAlign::Bottom => ay - l.height,
        };
        // Whole-pixel origins: glyph bounds are whole pixels and already
        // carry the sub-pixel pen position, so rounding later would shift
        // glyphs twice.
        let (ox, oy) = (ox.round(), oy.round());
        let (rx, ry) = ((ax - l.height / 2.0).round(), (ay + l.width / 2.0).round());
        let (w, h) = (width as i64, height as i64);
        for glyph in l.glyphs {
            let Some(outlined) = self.font.outline_glyph(glyph) else {
                continue; // e.g. a space
            };
            let b = outlined.px_bounds();
            outlined.draw(|gx, gy, coverage| {
                // Text-local pixel of this coverage sample.
                let lx = b.min.x + gx as f32;
                let ly = b.min.y + gy as f32;
                let (px, py) = if item.rotated {
                    // 90° CCW about the box centre: local x runs up the image.
                    (rx + ly, ry - lx - 1.0)
                } else {
                    (ox + lx, oy + ly)
                };
                let (px, py) = (px as i64, py as i64);
                if px < 0 || py < 0 || px >= w || py >= h {
                    return;
                }
                let i = ((py * w + px) * 3) as usize;
                let a = coverage.clamp(0.0, 1.0);
                for (k, c) in [item.color.0, item.color.1, item.color.2]
                    .into_iter()
                    .enumerate()
                {
                    let old = f32::from(rgb[i + k]);
                    rgb[i + k] = (old + (f32::from(c) - old) * a).round() as u8;
                }
            });
        }
    }
}
