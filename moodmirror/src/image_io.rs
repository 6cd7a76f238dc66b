//! Reading photos from disk with errors that name the file, and truncated files refused:
//! the JPEG decoder fills a cut-off file with grey and reports success, which would make a
//! damaged photo look like one without faces.

use std::path::Path;

use crate::error::{Error, Result};

/// How far from the end a JPEG's end-of-image marker may sit (cameras and editors pad files).
const JPEG_TAIL: usize = 4096;

/// Decodes the image at `path`; an error naming the file for unreadable, unknown, corrupt or
/// truncated input.
pub fn decode_file(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|reason| Error::Read { path: path.to_owned(), reason })?;
    decode_bytes(&bytes).map_err(|e| Error::ImageFile { path: path.to_owned(), reason: Box::new(e) })
}

/// [`decode_file`] for bytes in memory: the format told by the content (a WebP named `.jpg`
/// decodes), GIFs by their first frame, and the picture turned upright as its EXIF
/// orientation says (phones store portraits sideways with a tag).
pub fn decode_bytes(bytes: &[u8]) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let format = image::guess_format(bytes).map_err(|_| Error::UnknownImageFormat)?;
    if format == image::ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        return Err(Error::TruncatedJpeg);
    }
    let mut decoder = image::ImageReader::with_format(std::io::Cursor::new(bytes), format).into_decoder()?;
    // A broken EXIF block is no reason to refuse the picture: it stays as stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether a JPEG stream has its end-of-image marker (FF D9) near the end of the file.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(JPEG_TAIL)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let img = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma8(img).write_to(&mut out, image::ImageFormat::Jpeg).expect("encode");
        out.into_inner()
    }

    #[test]
    fn a_file_error_names_the_file_and_says_its_reason_once() {
        let dir = std::env::temp_dir().join(format!("moodmirror-image-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let garbage = dir.join("garbage.jpg");
        std::fs::write(&garbage, b"not an image").expect("write");
        for (path, reason) in [(dir.join("missing.png"), "os error 2"), (garbage, "unknown image format")] {
            let err = decode_file(&path).expect_err("an error");
            // What anyhow's `{:#}` prints: each error of the chain.
            let chain: Vec<String> =
                std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source()).map(|e| e.to_string()).collect();
            let said = chain.join(": ");
            assert!(said.contains(&*path.to_string_lossy()) && said.contains(reason), "{said}");
            assert_eq!(said.matches(reason).count(), 1, "said twice: {said}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_whole_jpeg_decodes_and_a_truncated_one_is_an_error() {
        let bytes = jpeg();
        assert_eq!(decode_bytes(&bytes).expect("whole").width(), 64);
        let cut = &bytes[..bytes.len() * 2 / 3];
        let err = decode_bytes(cut).expect_err("truncated").to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    /// A JPEG whose EXIF block says Orientation 6 (stored turned 90° anticlockwise: shown
    /// turned back clockwise), as a phone writes a portrait.
    fn jpeg_with_orientation_6(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, _| image::Rgb([if x < 4 { 255 } else { 0 }, 0, 0]));
        let mut plain = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img).write_to(&mut plain, image::ImageFormat::Jpeg).expect("encode");
        let plain = plain.into_inner();
        // APP1 "Exif\0\0", little-endian TIFF, one IFD entry: tag 0x0112 SHORT 1 = 6.
        let tiff: [u8; 26] = [b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
        let mut app1 = vec![0xFF, 0xE1];
        let len = (2 + 6 + tiff.len()) as u16;
        app1.extend_from_slice(&len.to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec();
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }

    #[test]
    fn exif_orientation_turns_the_picture_upright() {
        let img = decode_bytes(&jpeg_with_orientation_6(40, 20)).expect("decodes");
        assert_eq!((img.width(), img.height()), (20, 40), "turned a quarter");
        // The red left edge as stored is the top edge once turned clockwise.
        let rgb = img.to_rgb8();
        assert!(rgb.get_pixel(10, 1)[0] > 200 && rgb.get_pixel(10, 38)[0] < 60, "{:?} {:?}", rgb.get_pixel(10, 1), rgb.get_pixel(10, 38));
    }

    #[test]
    fn formats_are_told_by_content_not_by_name() {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 99])));
        for format in [image::ImageFormat::WebP, image::ImageFormat::Bmp, image::ImageFormat::Tiff, image::ImageFormat::Gif] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).expect("encode");
            let dir = tempfile::tempdir().expect("tempdir");
            // Saved under a JPEG name, as a WebP in a held-out photo set was.
            let path = dir.path().join("photo.jpg");
            std::fs::write(&path, bytes.into_inner()).expect("write");
            let back = decode_file(&path).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!((back.width(), back.height()), (32, 24), "{format:?}");
        }
    }

    #[test]
    fn garbage_and_empty_input_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("noise.jpg");
        std::fs::write(&path, b"not an image at all").expect("write");
        let err = format!("{:#}", decode_file(&path).expect_err("garbage"));
        assert!(err.contains("noise.jpg"), "{err}");
        assert!(decode_bytes(&[]).is_err());
    }
}
