"""grand-challenge algorithm entry point of palm-classification, palm-fovea, palm-disc and palm-all.

The image's task (PALM_TASK: classification, fovea, disc, or all: the three in one job) is baked
in at build time (containers/algorithm/Dockerfile, --build-arg TASK=...). Two input modes,
detected from /input (see palm_algos/serve.py and docs/CONTAINERS.md):
  * grand-challenge: /input/inputs.json and /input/images/<slug>/*.mha|tif -> /output/...
  * PALM batch: every image under /input -> the PALM submission files in /output
"""

import os
import sys

from palm_algos import serve

if __name__ == "__main__":
    task = os.environ.get("PALM_TASK", "")
    if task not in (*serve.TASKS, serve.ALL):
        print(f"palm: error: PALM_TASK={task!r}: the image's task must be one of {', '.join((*serve.TASKS, serve.ALL))} "
              f"(docker build --build-arg TASK=...)", file=sys.stderr)
        raise SystemExit(1)
    raise SystemExit(serve.main(task))
