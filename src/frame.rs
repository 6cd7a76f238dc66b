//! The element's video formats and how a mapped GStreamer frame becomes the core's planes.

use moodmirror::image::PixelLayout;

/// Formats the element accepts.
pub const FORMATS: [gst_video::VideoFormat; 16] = [
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
    gst_video::VideoFormat::Gray8,
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Nv12,
    // What webcams send uncompressed: read and drawn on in place, no videoconvert needed.
    gst_video::VideoFormat::Yuy2,
    gst_video::VideoFormat::Uyvy,
    gst_video::VideoFormat::Yvyu,
];

/// The pixel layout of `info`'s format, or `None` when it is not one of [`FORMATS`].
pub fn layout_of(info: &gst_video::VideoInfo) -> Option<PixelLayout> {
    use gst_video::VideoFormat as F;
    let finfo = info.format_info();
    match info.format() {
        F::Gray8 => Some(PixelLayout::Gray),
        F::I420 => Some(PixelLayout::I420),
        F::Nv12 => Some(PixelLayout::Nv12),
        F::Yuy2 | F::Uyvy | F::Yvyu => {
            // Offsets of Y, U and V in a pair (YUY2: 0, 1, 3).
            let offsets = finfo.poffset();
            Some(PixelLayout::Yuv422 { y: offsets[0] as usize, u: offsets[1] as usize, v: offsets[2] as usize })
        }
        f if FORMATS.contains(&f) => {
            let offsets = finfo.poffset();
            Some(PixelLayout::Packed {
                r: offsets[0] as usize,
                g: offsets[1] as usize,
                b: offsets[2] as usize,
                bytes_per_pixel: finfo.pixel_stride()[0] as usize,
            })
        }
        _ => None,
    }
}

/// The luma range of a frame: (black, white).
pub fn luma_range(info: &gst_video::VideoInfo, layout: PixelLayout) -> (u8, u8) {
    match layout {
        PixelLayout::I420 | PixelLayout::Nv12 | PixelLayout::Yuv422 { .. }
            if info.colorimetry().range() != gst_video::VideoColorRange::Range0_255 =>
        {
            (16, 235)
        }
        _ => (0, 255),
    }
}
