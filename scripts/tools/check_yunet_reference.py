#!/usr/bin/env python3
"""Agreement of moodmirror's YuNet (candle) with the ONNX reference run by onnxruntime.

Both see the same input: images at most 640 px wide (so `moodmirror image` detects at their own
size), RGB turned into BGR float planes padded with zeros to multiples of 32, as OpenCV's
FaceDetectorYN does. Boxes are compared as moodmirror reports them, cut to the picture. The reference decodes its outputs with OpenCV's rules (score =
sqrt(class x objectness), boxes from the cell corner, NMS 0.3). A face agrees when the other side
has a box at IoU >= 0.9 whose five landmarks are all within 5 % of the face's size. Faces scoring
within 0.05 of the threshold on either side are left out (a hair's difference in score may
put them on either side).

onnxruntime, numpy and Pillow come from PyPI and serve only this test-time check:

    python3 -m venv /tmp/ort && /tmp/ort/bin/pip install onnxruntime numpy pillow
    /tmp/ort/bin/python scripts/tools/check_yunet_reference.py --onnx DATA/yunet/yunet_n_dynamic.onnx \\
        IMAGES_OR_FOLDERS...
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

import numpy as np
import onnxruntime as ort
from PIL import Image

THRESHOLD = 0.7
MARGIN = 0.05


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference(session, path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    h, w, _ = rgb.shape
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    x = np.zeros((1, 3, ph, pw), np.float32)
    x[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    faces = []
    for s in (8, 16, 32):
        cols = pw // s
        cls, obj = outs[f"cls_{s}"][0, :, 0], outs[f"obj_{s}"][0, :, 0]
        bbox, kps = outs[f"bbox_{s}"][0], outs[f"kps_{s}"][0]
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        for i in np.nonzero(score >= THRESHOLD - MARGIN)[0]:
            r, c = divmod(int(i), cols)
            cx, cy = (c + bbox[i, 0]) * s, (r + bbox[i, 1]) * s
            bw, bh = np.exp(bbox[i, 2]) * s, np.exp(bbox[i, 3]) * s
            lm = [((kps[i, 2 * k] + c) * s, (kps[i, 2 * k + 1] + r) * s) for k in range(5)]
            # moodmirror reports every box cut to the picture (one rule for all outputs).
            box = [max(0.0, cx - bw / 2), max(0.0, cy - bh / 2), min(float(w), cx + bw / 2), min(float(h), cy + bh / 2)]
            faces.append({"box": box, "score": float(score[i]), "landmarks": lm})
    faces.sort(key=lambda f: -f["score"])
    kept = []
    for f in faces:
        if all(iou(f["box"], k["box"]) <= 0.3 for k in kept):
            kept.append(f)
    return kept


def ours(binary, files):
    out = {}
    for i in range(0, len(files), 200):
        args = [binary, "image", "--detector", "yunet", "--min-face-size", "1", "--max-faces", "256"]
        proc = subprocess.run(args + files[i:i + 200], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            r = json.loads(line)
            if "error" in r:
                sys.exit(f"moodmirror image: {r['file']}: {r['error']}")
            if r.get("padded_retry"):
                r["faces"] = []  # found on a padded copy: not the same input as the reference
            out[r["file"]] = [{"box": [f["x"], f["y"], f["x"] + f["width"], f["y"] + f["height"]],
                               "score": f["score"],
                               "landmarks": f.get("landmarks", [])} for f in r["faces"]]
    return out


def agrees(face, others):
    side = max(face["box"][2] - face["box"][0], face["box"][3] - face["box"][1])
    best = max(others, key=lambda o: iou(face["box"], o["box"]), default=None)
    if best is None:
        return False, 0.0, None
    box_iou = iou(face["box"], best["box"])
    if not face["landmarks"] or not best["landmarks"]:
        return box_iou >= 0.9, box_iou, None
    err = max(np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in zip(face["landmarks"], best["landmarks"])) / side
    return box_iou >= 0.9 and err <= 0.05, box_iou, err


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--onnx", required=True)
    p.add_argument("--binary", default="target/release/moodmirror")
    p.add_argument("paths", nargs="+")
    a = p.parse_args()
    files = []
    for path in a.paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith((".jpg", ".jpeg", ".png")))
        else:
            files.append(path)
    files = [f for f in files if Image.open(f).width <= 640]
    # JPEG decoders differ by a grey level here and there (PIL's libjpeg, moodmirror's Rust
    # decoder), enough to move a borderline box: both sides read the same lossless copies.
    tmp = tempfile.mkdtemp(prefix="yunet-check-")
    copies = []
    for i, f in enumerate(files):
        copy = os.path.join(tmp, f"{i:05d}-{os.path.splitext(os.path.basename(f))[0]}.png")
        Image.open(f).convert("RGB").save(copy)
        copies.append(copy)
    files = copies
    session = ort.InferenceSession(a.onnx, providers=["CPUExecutionProvider"])
    mine = ours(a.binary, files)
    n = matched = 0
    ious, errs = [], []
    for f in files:
        ref = reference(session, f)
        candle = mine.get(f, [])
        # Every face moodmirror reports, and every reference face clear of the threshold.
        checks = [(face, ref, "moodmirror") for face in candle]
        checks += [(face, candle, "reference") for face in ref if face["score"] >= THRESHOLD + MARGIN]
        for face, other, who in checks:
            ok, box_iou, err = agrees(face, other)
            n += 1
            matched += ok
            ious.append(box_iou)
            if err is not None:
                errs.append(err)
            if not ok:
                print(f"  disagree: {f}: {who} face {[round(v, 1) for v in face['box']]} score {face['score']:.3f}: "
                      f"best IoU {box_iou:.3f}, landmark error {err}")
    print(f"YuNet candle vs onnxruntime on {len(files)} images: {matched}/{n} faces agree "
          f"({100 * matched / max(1, n):.2f} %; IoU >= 0.9 and landmarks within 5 % of the face); "
          f"median IoU {np.median(ious) if ious else 0:.4f}, worst {min(ious, default=0):.4f}; "
          f"median landmark error {100 * np.median(errs) if errs else 0:.2f} %, worst {100 * max(errs, default=0):.2f} %")
    shutil.rmtree(tmp)
    return 0 if matched >= 0.99 * n else 1


if __name__ == "__main__":
    sys.exit(main())
