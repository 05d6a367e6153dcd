"""grand-challenge algorithm entry point: pathologic myopia classification (PALM task 1): a likelihood per image.

Two input modes, detected from /input (see palm_algos/serve.py and docs/CONTAINERS.md):
  * grand-challenge: /input/inputs.json and /input/images/<slug>/*.mha|tif -> /output/...
  * PALM batch: every image under /input -> the PALM submission files in /output
"""

from palm_algos import serve

if __name__ == "__main__":
    raise SystemExit(serve.main("classification"))
