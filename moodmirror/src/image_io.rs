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
    let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    decode_bytes(&bytes).map_err(|e| Error::ImageFile { path: path.to_owned(), source: Box::new(e) })
}

/// [`decode_file`] for bytes in memory.
pub fn decode_bytes(bytes: &[u8]) -> Result<image::DynamicImage> {
    let format = image::guess_format(bytes).map_err(|_| Error::UnknownImageFormat)?;
    if format == image::ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        return Err(Error::TruncatedJpeg);
    }
    Ok(image::load_from_memory_with_format(bytes, format)?)
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
    fn a_whole_jpeg_decodes_and_a_truncated_one_is_an_error() {
        let bytes = jpeg();
        assert_eq!(decode_bytes(&bytes).expect("whole").width(), 64);
        let cut = &bytes[..bytes.len() * 2 / 3];
        let err = decode_bytes(cut).expect_err("truncated").to_string();
        assert!(err.contains("truncated"), "{err}");
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
