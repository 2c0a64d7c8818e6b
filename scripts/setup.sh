#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: the Fashion-MNIST package, Chromium for the browser
# test, and protozoo with every extra; bench brings lightly, whose anchors are tested too. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# torch 2.14.1 / torchvision 0.29.1 first: on this kind of machine they come from local disk.
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[all,dev,bench]"  # bench: lightly, for the lightly_dino/lightly_swav anchors
