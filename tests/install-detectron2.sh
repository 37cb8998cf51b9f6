#!/usr/bin/env bash
# Optional Detectron2 backend for transfer/, installed beside the project (never inside its packages).
# On a cluster install Detectron2 from its source repository instead. Here and in CI: the PyPI wheel
# sal-detectron2 0.7.2 (an Apache-2.0 build of upstream Detectron2 made for Python 3.10) runs as pure
# Python on 3.11 (its compiled ops are not loaded; torchvision's roi_align / nms are used). It also ships
# a top-level package named `tools`, so it goes to its own folder, appended to sys.path by a .pth file.
set -euo pipefail
venv=${1:-.venv}
target="$(cd "$venv" && pwd)/detectron2-py310"
"$venv/bin/pip" install -q --no-deps --target "$target" --python-version 3.10 --only-binary=:all: \
    --platform linux_x86_64 --upgrade sal-detectron2==0.7.2
"$venv/bin/pip" install -q fvcore iopath portalocker yacs pycocotools omegaconf tabulate termcolor cloudpickle 'setuptools<81'
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$target" > "$site/swavbench-detectron2.pth"
"$venv/bin/python" -c 'import detectron2; print("detectron2", detectron2.__version__, "from", detectron2.__file__)'
