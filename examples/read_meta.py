#!/usr/bin/env python3
"""Read moodmirror's per-frame metadata in Python (GObject introspection).

    GST_PLUGIN_PATH=target/release python3 examples/read_meta.py [image.jpg]

Needs Debian's python3-gi and python3-gst-1.0 (its overrides turn GstValueList into a list).
"""
import os
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

image = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "astronaut.jpg")
Gst.init(None)
pipeline = Gst.parse_launch(
    f'filesrc location="{image}" ! jpegdec ! videoconvert ! imagefreeze num-buffers=3 '
    "! moodmirror ! appsink name=sink sync=false")
sink = pipeline.get_by_name("sink")
pipeline.set_state(Gst.State.PLAYING)
while True:
    sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
    if sample is None:
        break
    buf = sample.get_buffer()
    meta = buf.get_custom_meta("MoodMirrorMeta")
    if meta is None:
        continue
    for face in meta.get_structure().get_value("faces"):
        print(f"{buf.pts / 1e6:.0f} ms: face at {face.get_value('x')},{face.get_value('y')} "
              f"{face.get_value('width')}x{face.get_value('height')} -> "
              f"{face.get_value('emotion')} {100 * face.get_value('confidence'):.0f}%")
pipeline.set_state(Gst.State.NULL)
