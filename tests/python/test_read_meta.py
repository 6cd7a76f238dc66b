#!/usr/bin/env python3
"""Reads moodmirror's metadata from Python through GObject introspection, as users do.

Run with GST_PLUGIN_PATH pointing at the built plugin (scripts/test.sh does). Exits non-zero
on any failure; prints 'N passed, 0 failed' on success.
"""
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "fixtures", "astronaut.jpg")
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def pull_buffers(n):
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"filesrc location={FIXTURE} ! jpegdec ! videoconvert ! imagefreeze num-buffers={n} "
        "! moodmirror ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    buffers = []
    while True:
        sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
        if sample is None:
            break
        buffers.append(sample.get_buffer())
    pipeline.set_state(Gst.State.NULL)
    return buffers


def test_custom_meta(buffers):
    assert len(buffers) == 3, f"expected 3 buffers, got {len(buffers)}"
    for buf in buffers:
        meta = buf.get_custom_meta("MoodMirrorMeta")
        assert meta is not None, "no MoodMirrorMeta"
        s = meta.get_structure()
        faces = s.get_value("faces")
        assert len(faces) == 1, f"expected one face, got {len(faces)}"
        face = faces[0]
        x, y, w, h = (face.get_value(k) for k in ("x", "y", "width", "height"))
        assert 150 < x < 210 and 40 < y < 100 and 70 < w < 130 and 70 < h < 130, (x, y, w, h)
        assert face.get_value("emotion") in CLASSES
        total = sum(face.get_value(c) for c in CLASSES)
        assert abs(total - 1.0) < 1e-3, total
        assert 0.0 < face.get_value("confidence") <= 1.0


def main():
    buffers = pull_buffers(3)
    passed = failed = 0
    for test in (test_custom_meta,):
        try:
            test(buffers)
            passed += 1
            print(f"{test.__name__}: ok")
        except AssertionError as e:
            failed += 1
            print(f"{test.__name__}: FAILED {e}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
