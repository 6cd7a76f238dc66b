//! Full face detection off the streaming thread: a worker with its own detector takes a copy of
//! the latest due frame, cuts it to detection size and hands its faces back a few frames later,
//! so no frame waits for a detection (nor for its preparation: the streaming thread only copies
//! the planes). Buffers travel with the job and come back with the result: nothing is allocated
//! per frame once they are sized.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use crate::detect::{DetectParams, Detector, DetectorKind, Face, GrayImage, RgbImage};
use crate::image::OwnedFrame;

/// A finished detection's faces and the (width, height) of the frame they were found in.
pub type FoundFaces<'a> = (&'a [Face], (usize, usize));

/// Where full detections run (the element's `detection-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DetectionMode {
    /// In the background when the pipeline is live (no frame waits), on the streaming thread
    /// otherwise (files: every result lands on the frame it was found in, reproducibly).
    Auto = 0,
    /// On the streaming thread: the frame waits for its detection.
    Sync = 1,
    /// On a worker thread: faces reach the tracker a few frames later.
    Async = 2,
}

/// One frame to search: its copy, and the detection size it is cut to on the worker.
pub struct DetectionJob {
    /// The frame in its own format for detectors that read colour; its luma (the element's,
    /// also for packed RGB frames) as a grey frame for the others.
    pub frame: OwnedFrame,
    /// Detection-size pictures, made on the worker.
    gray: Vec<u8>,
    rgb: Vec<u8>,
    /// Detection size.
    pub width: usize,
    pub height: usize,
    /// Detection size → frame size.
    pub scale: f32,
    pub params: DetectParams,
}

/// The faces found in a job's frame, in that frame's coordinates, and the job's buffers.
pub struct DetectionDone {
    pub faces: Vec<Face>,
    pub job: DetectionJob,
    pub error: Option<crate::Error>,
}

/// The worker and the buffers of the next job.
pub struct BackgroundDetector {
    kind: DetectorKind,
    jobs: Option<Sender<DetectionJob>>,
    done: Receiver<DetectionDone>,
    worker: Option<JoinHandle<()>>,
    /// Buffers to fill for the next job (None while a job is out).
    spare: Option<DetectionJob>,
    faces: Vec<Face>,
}

impl BackgroundDetector {
    /// Starts a worker with its own `kind` detector.
    pub fn start(kind: DetectorKind, device: &candle_core::Device) -> crate::Result<Self> {
        let mut detector = Detector::new(kind, device)?;
        let (job_tx, job_rx) = channel::<DetectionJob>();
        let (done_tx, done_rx) = channel::<DetectionDone>();
        let worker = std::thread::Builder::new()
            .name("moodmirror-detect".into())
            .spawn(move || {
                let mut faces = Vec::new();
                // Ends when the element drops its sender (stop) or stops listening.
                while let Ok(mut job) = job_rx.recv() {
                    let (w, h) = (job.width, job.height);
                    let frame = job.frame.view();
                    let color = detector.needs_color();
                    if color {
                        frame.rgb_resized(w, h, &mut job.rgb);
                    } else {
                        let luma = GrayImage { data: frame.planes[0], width: frame.width, height: frame.height, stride: frame.strides[0] };
                        job.gray.resize(w * h, 0);
                        crate::image::resize_bilinear(&luma, &mut job.gray, w, h);
                    }
                    let gray = GrayImage { data: &job.gray, width: w, height: h, stride: w };
                    let rgb = color.then_some(RgbImage { data: &job.rgb, width: w, height: h, stride: w * 3 });
                    faces.clear();
                    let error = detector.detect(&gray, rgb.as_ref(), &job.params, &mut faces).err();
                    for f in &mut faces {
                        f.scale(job.scale);
                    }
                    let done = DetectionDone { faces: std::mem::take(&mut faces), job, error };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| crate::Error::Worker(format!("cannot start the detection thread: {e}")))?;
        let spare = DetectionJob {
            frame: OwnedFrame::default(),
            gray: Vec::new(),
            rgb: Vec::new(),
            width: 0,
            height: 0,
            scale: 1.0,
            params: DetectParams::default(),
        };
        Ok(Self { kind, jobs: Some(job_tx), done: done_rx, worker: Some(worker), spare: Some(spare), faces: Vec::new() })
    }

    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    /// The buffers for a new job when the worker is idle; `None` while it is busy (the frame
    /// then goes without a full detection: the latest frame wins, none queue up).
    pub fn idle_job(&mut self) -> Option<&mut DetectionJob> {
        self.spare.as_mut()
    }

    /// Hands the job filled through [`Self::idle_job`] to the worker.
    pub fn submit(&mut self) {
        if let (Some(job), Some(tx)) = (self.spare.take(), &self.jobs) {
            if let Err(e) = tx.send(job) {
                // The worker is gone (it only exits when asked): keep the buffers.
                self.spare = Some(e.0);
            }
        }
    }

    /// The faces of the last finished job, if one finished since the last call, with the
    /// (width, height) of the frame they were found in.
    pub fn poll(&mut self) -> crate::Result<Option<FoundFaces<'_>>> {
        match self.done.try_recv() {
            Ok(done) => {
                let job = &done.job;
                let size = ((job.width as f32 * job.scale).round() as usize, (job.height as f32 * job.scale).round() as usize);
                self.spare = Some(done.job);
                if let Some(e) = done.error {
                    return Err(e);
                }
                self.faces = done.faces;
                Ok(Some((&self.faces, size)))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(crate::Error::Worker("the detection thread ended".into())),
        }
    }

    /// Whether a job is out.
    pub fn busy(&self) -> bool {
        self.spare.is_none()
    }
}

impl Drop for BackgroundDetector {
    fn drop(&mut self) {
        // Closing the channel ends the worker after its current job.
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
