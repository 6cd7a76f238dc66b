//! Weight conversion from other frameworks' files (`convert-mtcnn`, `convert-yunet`): the only
//! place that reads PyTorch or ONNX.

pub mod onnx;
pub mod torch_legacy;
pub mod yunet;
