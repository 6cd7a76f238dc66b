#!/usr/bin/env python3
"""How often a model reads the emotion a face was meant to show rather than the one most people see.

FER2013's label is the emotion the photo was found under (closer to what a posed set labels: the
intended expression); FER+'s majority is what ten annotators saw. On 729 FER+ val faces the
annotators saw neutral where FER2013 names an emotion (subtle anger, sadness, fear): a model that
follows FER+ calls them neutral, which is what costs it on posed sets from other labs (angry read
as neutral). For each model: FER+ majority accuracy and balanced accuracy, FER2013-label accuracy,
on that subset the share read as FER2013's emotion and as neutral, and per FER2013 label the share
read as neutral.

usage: scripts/tools/intended_vs_perceived.py DATA/fer2013-originals [--model FILE ...]
(no --model: the embedded default; the binary at target/release/moodmirror)"""
import argparse, csv, json, os, subprocess, sys, tempfile

from fer_sensitivity import CLASSES, majority


def read_labels(originals):
    """val file -> (FER2013 label, FER+ majority or None)."""
    labels = {}
    with open(os.path.join(originals, "labels.csv"), encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            if r["split"] == "val":
                labels[r["file"]] = (r["fer2013_label"], majority({k.lower(): v for k, v in r.items()}))
    return labels


def read_predictions(path, labels):
    """The top label per val file of an `evaluate --predictions` CSV."""
    top = {}
    with open(path, encoding="utf-8") as f:
        for r in csv.DictReader(f):
            p = [float(r[c]) for c in CLASSES]
            # The source may be absolute; labels.csv names val files `val/<name>`.
            key = "val/" + os.path.basename(r["source"])
            if key not in labels:
                sys.exit(f"{path}: {r['source']} is not a val file of labels.csv")
            top[key] = CLASSES[p.index(max(p))]
    return top


def summarise(top, labels):
    """On the FER+-neutral / FER2013-emotion subset, the shares read as FER2013's emotion and as
    neutral; per FER2013 label, the share read as neutral."""
    read_neutral, per_label = {c: 0 for c in CLASSES}, {c: 0 for c in CLASSES}
    subset = subset_intended = subset_neutral = 0
    for file, pred in top.items():
        fer, plus = labels[file]
        per_label[fer] += 1
        read_neutral[fer] += pred == "neutral"
        if plus == "neutral" and fer != "neutral":
            subset += 1
            subset_intended += pred == fer
            subset_neutral += pred == "neutral"
    line = (f"FER+ neutral / FER2013 emotion (n={subset}): intended {subset_intended / max(subset, 1):.3f}, "
            f"neutral {subset_neutral / max(subset, 1):.3f}")
    neutral = "  read as neutral, by FER2013 label: " + " ".join(
        f"{c} {read_neutral[c] / per_label[c]:.2f}" for c in CLASSES if per_label[c])
    return line, neutral


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("originals")
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--binary", default="target/release/moodmirror")
    args = ap.parse_args()
    labels = read_labels(args.originals)
    data = os.path.join(args.originals, "labels.csv") + ":val"
    with tempfile.TemporaryDirectory(prefix="intended-") as work:
        for model in args.model or [None]:
            out, report = os.path.join(work, "predictions.csv"), os.path.join(work, "report")
            cmd = [args.binary, "evaluate", "--data", data, "--labels", "ferplus", "--predictions", out, "--report", report]
            cmd += ["--model", model] if model else []
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Accuracies as evaluate scores them; the subset is what it does not count.
            by = json.load(open(os.path.join(report, "report.json")))["by_labels"]
            line, neutral = summarise(read_predictions(out, labels), labels)
            print(f"{model or 'embedded default'}: FER+ {by['ferplus']['accuracy']:.4f} "
                  f"(balanced {by['ferplus']['balanced_accuracy']:.4f})  FER2013 {by['fer2013']['accuracy']:.4f}  {line}\n{neutral}")


if __name__ == "__main__":
    sys.exit(main())
