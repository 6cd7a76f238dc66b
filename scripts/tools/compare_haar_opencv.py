#!/usr/bin/env python3
"""Compare moodmirror's Haar detector with OpenCV's detectMultiScale on the same images.

Both run OpenCV's haarcascade_frontalface_default.xml (weights/) with the same parameters.
OpenCV (opencv-python-headless from PyPI) is a test-time reference tool only.

usage: scripts/tools/compare_haar_opencv.py [--min-size 40] [--scale 1.1] [--neighbors 3] IMAGES...
Prints, per image set: faces found by each, the share of OpenCV's boxes that moodmirror
matches at IoU >= 0.5 and >= 0.9, and the mean IoU of matched pairs.
"""
import argparse, json, os, subprocess, sys

import cv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_faces import iou  # noqa: E402




def main():
    p = argparse.ArgumentParser()
    p.add_argument("--min-size", type=int, default=40)
    p.add_argument("--scale", type=float, default=1.1)
    p.add_argument("--neighbors", type=int, default=3)
    p.add_argument("--binary", default="target/release/moodmirror")
    p.add_argument("images", nargs="+")
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cascade = cv2.CascadeClassifier(os.path.join(root, "weights", "haarcascade_frontalface_default.xml"))
    out = subprocess.run(
        [a.binary, "image", "--min-face-size", str(a.min_size), "--scale-factor", str(a.scale),
         "--min-neighbors", str(a.neighbors), "--max-faces", "256", *a.images],
        check=True, capture_output=True, text=True).stdout
    ours = {}
    for line in out.splitlines():
        r = json.loads(line)
        ours[r["file"]] = [(f["x"], f["y"], f["width"], f["height"]) for f in r["faces"]]
    n_cv = n_ours = m50 = m90 = 0
    ious = []
    for path in a.images:
        gray = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY)
        ref = [tuple(int(v) for v in r) for r in cascade.detectMultiScale(
            gray, scaleFactor=a.scale, minNeighbors=a.neighbors, minSize=(a.min_size, a.min_size))]
        mine = ours.get(path, [])
        n_cv += len(ref)
        n_ours += len(mine)
        for r in ref:
            best = max((iou(r, m) for m in mine), default=0.0)
            if best >= 0.5:
                m50 += 1
                ious.append(best)
            if best >= 0.9:
                m90 += 1
    print(f"images {len(a.images)}  faces: opencv {n_cv}  moodmirror {n_ours}")
    if n_cv:
        print(f"opencv boxes matched by moodmirror: IoU>=0.5 {m50}/{n_cv} ({100*m50/n_cv:.1f}%)  "
              f"IoU>=0.9 {m90}/{n_cv} ({100*m90/n_cv:.1f}%)  mean IoU of matches {sum(ious)/max(1,len(ious)):.3f}")


if __name__ == "__main__":
    sys.exit(main())
