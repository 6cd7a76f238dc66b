//! The element's enum properties as GTypes. The core's enums stay free of GLib; each GType here
//! maps one to one onto its core enum.

use gst::glib;

use moodmirror::background::DetectionMode as CoreDetectionMode;
use moodmirror::detect::DetectorKind as CoreDetectorKind;
use moodmirror::emotion::{DeviceKind as CoreDeviceKind, Precision as CorePrecision};

/// Generates `From` both ways between a GType enum and its core enum, variant by variant.
macro_rules! same_variants {
    ($gtype:ident, $core:ident, [$($variant:ident),+]) => {
        impl From<$gtype> for $core {
            fn from(value: $gtype) -> Self {
                match value {
                    $($gtype::$variant => $core::$variant,)+
                }
            }
        }

        impl From<$core> for $gtype {
            fn from(value: $core) -> Self {
                match value {
                    $($core::$variant => $gtype::$variant,)+
                }
            }
        }
    };
}

/// The `detector` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMoodMirrorDetector")]
pub enum DetectorKind {
    #[enum_value(name = "Viola-Jones Haar cascade (OpenCV's frontal-face model)", nick = "haar")]
    Haar = 0,
    #[enum_value(name = "MTCNN (CNN cascade with landmarks, facenet-pytorch weights)", nick = "mtcnn")]
    Mtcnn = 1,
    #[enum_value(name = "YuNet-n (one-pass CNN with landmarks, libfacedetection.train weights)", nick = "yunet")]
    Yunet = 2,
    #[enum_value(name = "Upstream: classify the face ROI metas already on the buffer (facedetect, another detector)", nick = "upstream")]
    Upstream = 3,
}
same_variants!(DetectorKind, CoreDetectorKind, [Haar, Mtcnn, Yunet, Upstream]);

/// The `device` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMoodMirrorDevice")]
pub enum DeviceKind {
    #[enum_value(name = "Auto: CUDA GPU when built with it and present, else CPU", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "CUDA GPU 0 (needs a build with the `cuda` feature)", nick = "cuda")]
    Cuda = 2,
}
same_variants!(DeviceKind, CoreDeviceKind, [Auto, Cpu, Cuda]);

/// The `precision` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMoodMirrorPrecision")]
pub enum Precision {
    #[enum_value(name = "Auto: int8 on x86-64 CPUs with AVX2 (VNNI kernels where present), else f32", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "f32", nick = "f32")]
    F32 = 1,
    #[enum_value(name = "int8 convolutions", nick = "int8")]
    Int8 = 2,
}
same_variants!(Precision, CorePrecision, [Auto, F32, Int8]);

/// The `detection-mode` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMoodMirrorDetectionMode")]
pub enum DetectionMode {
    #[enum_value(name = "Auto: background when live, else on the streaming thread", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "On the streaming thread: the frame waits for its detection", nick = "sync")]
    Sync = 1,
    #[enum_value(name = "On a worker thread: faces reach the tracker a few frames later", nick = "async")]
    Async = 2,
}
same_variants!(DetectionMode, CoreDetectionMode, [Auto, Sync, Async]);

#[cfg(test)]
mod tests {
    use super::*;
    use gst::glib::prelude::*;

    /// The nicks of an enum GType, in value order.
    fn nicks<T: StaticType>() -> Vec<String> {
        let class = glib::EnumClass::with_type(T::static_type()).expect("an enum type");
        class.values().iter().map(|v| v.nick().to_string()).collect()
    }

    #[test]
    fn property_nicks_are_the_cores_names() {
        // The command line and pipeline descriptions use the core's names: the two must agree.
        let detectors = [CoreDetectorKind::Haar, CoreDetectorKind::Mtcnn, CoreDetectorKind::Yunet, CoreDetectorKind::Upstream];
        assert_eq!(nicks::<DetectorKind>(), detectors.map(|d| d.nick().to_string()));
        for d in detectors {
            assert_eq!(d.nick().parse::<CoreDetectorKind>().ok(), Some(d));
            assert_eq!(CoreDetectorKind::from(DetectorKind::from(d)), d);
        }
        let precisions = [CorePrecision::Auto, CorePrecision::F32, CorePrecision::Int8];
        assert_eq!(nicks::<Precision>(), precisions.map(|p| p.nick().to_string()));
        for p in precisions {
            assert_eq!(p.nick().parse::<CorePrecision>().ok(), Some(p));
        }
    }
}
