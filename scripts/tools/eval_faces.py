#!/usr/bin/env python3
"""Face detection quality and agreement, using `moodmirror image` JSON output.

  faces-dev   recall / precision at IoU >= 0.5 against the dlib imglab boxes (boxes.xml)
  wild-dev    share of photos where a face is found; accuracy of detect + classify on the
              happy/neutral labels (the label counts as right when the top emotion matches)
  reference   agreement of `--detector mtcnn` with facenet-pytorch's MTCNN (a test-time
              reference tool from PyPI, run with the same min face size): share of its faces
              that moodmirror matches at IoU >= 0.9

usage: scripts/tools/eval_faces.py [--faces-dev DIR] [--wild-dev DIR] [--reference] [--detector haar|mtcnn]
                             [--min-face-size N] [--limit N] [--model WEIGHTS]
"""
import argparse, csv, json, os, subprocess, sys, xml.etree.ElementTree as ET


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


MODEL = []  # extra `--model FILE` for `moodmirror image`, from --model


def run_image(binary, files, detector, min_size, extra=()):
    out = {}
    for i in range(0, len(files), 200):
        chunk = files[i:i + 200]
        args = [binary, "image", "--detector", detector, "--max-faces", "256", *MODEL, *extra]
        if min_size:
            args += ["--min-face-size", str(min_size)]
        # `image` exits non-zero when a file cannot be read; those carry an "error" line.
        proc = subprocess.run(args + chunk, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            r = json.loads(line)
            if "error" in r:
                print(f"unreadable: {r['file']}: {r['error']}", file=sys.stderr)
                continue
            out[r["file"]] = r["faces"]
        if proc.returncode != 0 and not proc.stdout:
            sys.exit(f"moodmirror image failed: {proc.stderr.strip()}")
    return out


def faces_dev(binary, root, detector, min_size):
    tree = ET.parse(os.path.join(root, "boxes.xml"))
    truth = {}
    for img in tree.iter("image"):
        path = os.path.join(root, img.get("file"))
        truth[path] = [(int(b.get("left")), int(b.get("top")), int(b.get("width")), int(b.get("height")))
                       for b in img.iter("box")]
    found = run_image(binary, sorted(truth), detector, min_size)
    tp = fp = fn = 0
    for path, gt in truth.items():
        dets = [(f["x"], f["y"], f["width"], f["height"]) for f in found.get(path, [])]
        used = set()
        for g in gt:
            best, bi = 0.0, None
            for i, d in enumerate(dets):
                if i not in used and iou(g, d) > best:
                    best, bi = iou(g, d), i
            if best >= 0.5:
                tp += 1
                used.add(bi)
            else:
                fn += 1
        fp += len(dets) - len(used)
    rec = tp / max(1, tp + fn)
    prec = tp / max(1, tp + fp)
    print(f"faces-dev [{detector}, min-face-size {min_size or 'default'}]: {tp + fn} faces, recall {rec:.3f}, "
          f"precision {prec:.3f} (tp {tp}, fp {fp}, fn {fn})")


def wild_dev(binary, root, detector, min_size, limit):
    rows = list(csv.reader(open(os.path.join(root, "labels.csv"))))
    if rows and not rows[0][0].lower().endswith((".jpg", ".png")):
        rows = rows[1:]
    rows = rows[:limit] if limit else rows
    files = [os.path.join(root, "images", r[0]) for r in rows]
    found = run_image(binary, files, detector, min_size)
    with_face = correct = 0
    predicted = {}  # true label -> {predicted emotion: count}
    for (name, label), path in zip(((r[0], r[1].strip().lower()) for r in rows), files):
        faces = found.get(path, [])
        if faces:
            with_face += 1
            best = max(faces, key=lambda f: f["width"] * f["height"])
            correct += best["emotion"] == label
            row = predicted.setdefault(label, {})
            row[best["emotion"]] = row.get(best["emotion"], 0) + 1
    n = len(files)
    print(f"wild-dev [{detector}, min-face-size {min_size or 'default'}]: face found in {with_face}/{n} "
          f"({100 * with_face / n:.1f}%), detect+classify accuracy on those {correct}/{with_face} "
          f"({100 * correct / max(1, with_face):.1f}%)")
    recalls = []
    for label in sorted(predicted):
        row = predicted[label]
        total = sum(row.values())
        recalls.append(row.get(label, 0) / total)
        shares = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(row.items(), key=lambda kv: -kv[1]))
        print(f"  {label} ({total}): read as {shares}")
    print(f"  balanced accuracy over {len(recalls)} classes: {sum(recalls) / max(1, len(recalls)):.3f}")


def reference(binary, files, min_size):
    from facenet_pytorch import MTCNN
    from PIL import Image
    mtcnn = MTCNN(keep_all=True, min_face_size=min_size, device="cpu")
    ours = run_image(binary, files, "mtcnn", min_size)
    n_ref = matched = 0
    for path in files:
        boxes, _ = mtcnn.detect(Image.open(path).convert("RGB"))
        ref = [] if boxes is None else [(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in boxes]
        mine = [(f["x"], f["y"], f["width"], f["height"]) for f in ours.get(path, [])]
        n_ref += len(ref)
        matched += sum(1 for r in ref if max((iou(r, m) for m in mine), default=0) >= 0.9)
    print(f"agreement with facenet-pytorch MTCNN (min face {min_size}) on {len(files)} images: "
          f"{matched}/{n_ref} faces at IoU >= 0.9 ({100 * matched / max(1, n_ref):.1f}%)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/moodmirror")
    p.add_argument("--faces-dev")
    p.add_argument("--wild-dev")
    p.add_argument("--reference", nargs="*", help="images for the facenet-pytorch agreement check")
    p.add_argument("--detector", default="mtcnn")
    p.add_argument("--min-face-size", type=int, default=0)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--model", help="emotion weights for `moodmirror image` (default: embedded)")
    a = p.parse_args()
    if a.model:
        MODEL.extend(["--model", a.model])
    if a.faces_dev:
        faces_dev(a.binary, a.faces_dev, a.detector, a.min_face_size)
    if a.wild_dev:
        wild_dev(a.binary, a.wild_dev, a.detector, a.min_face_size, a.limit)
    if a.reference:
        reference(a.binary, a.reference, a.min_face_size or 20)


if __name__ == "__main__":
    sys.exit(main())
