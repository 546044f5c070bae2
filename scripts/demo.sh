#!/usr/bin/env bash
# Log a small demo dataset (two versions and an alias) into the embedded registry, mount every
# artifact at $REFMOUNT_DEMO_MOUNT (default /mnt/artifacts) and read from it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
refmount=$(pwd)/.venv/bin/refmount
data=${REFMOUNT_DEMO_DATA:-/var/tmp/refmount-demo}
mnt=${REFMOUNT_DEMO_MOUNT:-/mnt/artifacts}

# Two versions of a toy image dataset on "NFS" (a local directory stands in for it).
.venv/bin/python - "$data" <<'PY'
import random, sys
from pathlib import Path
root = Path(sys.argv[1])
for version, count in (("v0", 40), ("v1", 50)):
    rng = random.Random(version)
    for split, n in (("train", count), ("val", count // 5)):
        for i in range(n):
            path = root / version / split / f"{i:04}.png"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(bytes(rng.getrandbits(8) for _ in range(4096)))
    (root / version / "labels.csv").write_text("".join(f"{i},{i % 10}\n" for i in range(count)))
PY
if ! "$refmount" ls demo/mnist >/dev/null 2>&1; then
  "$refmount" log demo/mnist "file://$data/v0/" --type dataset --metadata source=demo
  "$refmount" log demo/mnist "file://$data/v1/" --type dataset --alias best
fi
"$refmount" ls demo/mnist

mkdir -p "$mnt"
if mountpoint -q "$mnt" || ! ls "$mnt" >/dev/null 2>&1; then
  "$refmount" umount --lazy "$mnt" 2>/dev/null || true
fi
"$refmount" mount "$mnt"

echo
echo "\$ ls $mnt/demo/mnist";                  ls "$mnt/demo/mnist"
echo "\$ readlink $mnt/demo/mnist/latest";     readlink "$mnt/demo/mnist/latest"
echo "\$ head -3 $mnt/demo/mnist/latest/labels.csv"; head -3 "$mnt/demo/mnist/latest/labels.csv"
echo "\$ find $mnt/demo/mnist/v1 -type f | wc -l"; find "$mnt/demo/mnist/v1" -type f | wc -l
echo "\$ md5sum $mnt/demo/mnist/v1/train/0001.png $data/v1/train/0001.png"
md5sum "$mnt/demo/mnist/v1/train/0001.png" "$data/v1/train/0001.png"
echo "\$ getfattr -d $mnt/demo/mnist/v1/train/0001.png"; getfattr -d "$mnt/demo/mnist/v1/train/0001.png" 2>/dev/null
echo
echo "Mounted at $mnt. Unmount with: $refmount umount $mnt"
