#!/usr/bin/env python3
"""How an emotion model's accuracy moves when FER+ val faces look the way faces from other sources
do: sharper (a camera crop of a large face, downscaled), softer, lower resolution, framed tighter or
looser, darker or brighter, flatter, JPEG-compressed, shifted or tilted. Each variant of the 3,372
faces FER+ scores (majority label) is written as class folders and scored by `moodmirror evaluate`.

usage: scripts/tools/fer_sensitivity.py DATA/fer2013-originals [--model FILE] [--work DIR]
(needs numpy and opencv-python-headless; the binary at target/release/moodmirror)"""
import argparse, csv, json, os, shutil, subprocess, sys, tempfile

import cv2
import numpy as np

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
# FER+ vote columns in the originals' labels.csv, and the class each counts for.
VOTES = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
         "anger": "angry", "disgust": "disgust", "fear": "fear"}


def majority(row):
    """FER+'s majority over its ten vote columns, as `evaluate` scores it: None for a tie or for
    contempt, unknown or not-a-face on top."""
    counts = {k: int(row[k]) for k in list(VOTES) + ["contempt", "unknown", "nf"]}
    best = max(counts.values())
    winners = [k for k, n in counts.items() if n == best]
    if best == 0 or len(winners) > 1:
        return None
    return VOTES.get(winners[0])


def rescale_crop(img, scale):
    """The central `scale` of the frame (scale < 1: tighter) or the frame shrunk into a larger
    one with its edges replicated (scale > 1: looser), back at 48x48."""
    if scale < 1:
        side = int(round(48 * scale))
        o = (48 - side) // 2
        return cv2.resize(img[o:o + side, o:o + side], (48, 48), interpolation=cv2.INTER_LINEAR)
    side = int(round(48 / scale))
    small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    o = (48 - side) // 2
    return cv2.copyMakeBorder(small, o, 48 - side - o, o, 48 - side - o, cv2.BORDER_REPLICATE)


def variants():
    def sharpen(img, amount=1.0):
        blur = cv2.GaussianBlur(img, (0, 0), 1.0)
        return cv2.addWeighted(img, 1 + amount, blur, -amount, 0)

    def gamma(img, g):
        return np.clip(255.0 * (img / 255.0) ** g, 0, 255).astype(np.uint8)

    def jpeg(img, q):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)

    def rotate(img, deg):
        m = cv2.getRotationMatrix2D((23.5, 23.5), deg, 1.0)
        return cv2.warpAffine(img, m, (48, 48), borderMode=cv2.BORDER_REPLICATE)

    def shift(img, dx):
        m = np.float32([[1, 0, dx], [0, 1, 0]])
        return cv2.warpAffine(img, m, (48, 48), borderMode=cv2.BORDER_REPLICATE)

    return [
        ("as stored", lambda x: x),
        ("sharper (unsharp 1.0)", sharpen),
        ("much sharper (unsharp 2.0)", lambda x: sharpen(x, 2.0)),
        ("softer (blur sigma 1)", lambda x: cv2.GaussianBlur(x, (0, 0), 1.0)),
        ("low resolution (24 px)", lambda x: cv2.resize(cv2.resize(x, (24, 24), interpolation=cv2.INTER_AREA), (48, 48))),
        ("tighter (central 0.83)", lambda x: rescale_crop(x, 40 / 48)),
        ("looser (face 0.83 of frame)", lambda x: rescale_crop(x, 48 / 40)),
        ("darker (gamma 1.6)", lambda x: gamma(x, 1.6)),
        ("brighter (gamma 0.6)", lambda x: gamma(x, 0.6)),
        ("flat (contrast 0.5)", lambda x: np.clip((x.astype(np.float32) - 128) * 0.5 + 128, 0, 255).astype(np.uint8)),
        ("JPEG q20", lambda x: jpeg(x, 20)),
        ("shifted 4 px", lambda x: shift(x, 4)),
        ("tilted 10 degrees", lambda x: rotate(x, 10)),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("originals")
    ap.add_argument("--model")
    ap.add_argument("--work")
    ap.add_argument("--binary", default="target/release/moodmirror")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(os.path.join(args.originals, "labels.csv"), encoding="utf-8-sig")))
    rows = [r for r in rows if r["split"] == "val"]
    faces = []
    for r in rows:
        label = majority({k.lower(): v for k, v in r.items()})
        if label is not None:
            img = cv2.imread(os.path.join(args.originals, r["file"]), cv2.IMREAD_GRAYSCALE)
            if img is not None:
                faces.append((os.path.basename(r["file"]), label, img))
    work = args.work or tempfile.mkdtemp(prefix="fer-sensitivity-")
    print(f"{len(faces)} FER+ val faces (majority label); model: {args.model or 'embedded default'}")
    print(f"{'variant':<30} {'accuracy':>9} {'balanced':>9} {'ECE':>7}  recall angry disgust fear happy sad surprise neutral")
    for name, f in variants():
        root = os.path.join(work, "".join(c if c.isalnum() else "-" for c in name))
        shutil.rmtree(root, ignore_errors=True)
        for c in CLASSES:
            os.makedirs(os.path.join(root, c))
        for file, label, img in faces:
            cv2.imwrite(os.path.join(root, label, file), f(img))
        report = os.path.join(root, "report")
        cmd = [args.binary, "evaluate", "--data", root, "--report", report] + (["--model", args.model] if args.model else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = json.load(open(os.path.join(report, "report.json")))
        recall = " ".join(f"{r['per_class'][c]['recall']:.2f}" for c in CLASSES)
        print(f"{name:<30} {r['accuracy']:9.4f} {r['balanced_accuracy']:9.4f} {r['ece']:7.4f}  {recall}")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
