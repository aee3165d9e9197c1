#!/usr/bin/env bash
# The clean photographs of the recipes before issue 28 (configs/pretrained_small*.yaml, the drop
# detector's and the U-Net experiment's; tools/get_training_photos.sh fetches today's corpus): the 11 photographs
# of Debian's plasma-workspace-wallpapers (licences in docs/model_card.md), unpacked without installing
# the package. Usage: tools/get_plasma_photos.sh [DEST]  (default data/photos/plasma)
set -euo pipefail
dest=${1:-data/photos/plasma}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download plasma-workspace-wallpapers >/dev/null && dpkg -x ./*.deb unpacked)
mkdir -p "$dest"
for name in BytheWater ColdRipple DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
  cp "$work/unpacked/usr/share/wallpapers/$name/contents/images/1280x800.jpg" "$dest/$name.jpg"
done
cp "$work/unpacked/usr/share/wallpapers/Volna/contents/images/5120x2880.jpg" "$dest/Volna.jpg"
echo "11 photos in $dest"
