"""Make a CUDA-built torchvision wheel importable beside a CPU-only torch wheel.

PyPI's torchvision for linux x86_64 is compiled against CUDA torch: its C++ ops library
(_C.so: nms, roi_align, deform_conv2d) links libtorch_cuda.so, which a CPU torch does not
have. torchvision then fails at import ("operator torchvision::nms does not exist") because two
fake-tensor registrations in _meta_registrations.py assume the ops loaded.

palm's networks (ResNet, VGG, ASPP) and its transforms use none of those ops, so this script:
  1. does nothing when `import torchvision` already works (matching CPU wheels, or CUDA torch);
  2. otherwise removes the unloadable CUDA libraries (_C.so, image.so, torchvision.libs/),
     guards the two registrations behind torchvision.extension._has_ops() (the guard every
     other registration in that file already has), and checks that the palm networks run.
"""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

CHECK = (
    "import torch, torchvision; "
    "from torchvision.models import resnet34; "
    "from torchvision.models.segmentation.deeplabv3 import ASPP; "
    "from torchvision.transforms import v2; "
    "resnet34()(torch.zeros(1, 3, 64, 64)); "
    "print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
)


def works() -> bool:
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    if result.returncode == 0:
        print(result.stdout.strip())
    return result.returncode == 0


def main() -> int:
    if works():
        return 0
    spec = importlib.util.find_spec("torchvision")
    package = Path(spec.origin).parent
    for name in ("_C.so", "image.so"):
        (package / name).unlink(missing_ok=True)
    shutil.rmtree(package.parent / "torchvision.libs", ignore_errors=True)
    meta = package / "_meta_registrations.py"
    text = meta.read_text()
    fixed, count = re.subn(
        r'^@torch\.library\.register_fake\("(torchvision::\w+)"\)',
        r'@(torch.library.register_fake("\1") if torchvision.extension._has_ops() else (lambda fn: fn))',
        text,
        flags=re.M,
    )
    meta.write_text(fixed)
    print(f"fix_torchvision: removed CUDA ops libraries, guarded {count} fake registrations")
    if not works():
        print("fix_torchvision: torchvision still does not import; use matching torch/torchvision wheels", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
