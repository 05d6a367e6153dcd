"""grand-challenge algorithm entry point: all three PALM tasks (palm_algos.serve.TASKS) in one job.

Two input modes, detected from /input (see palm_algos/serve.py and docs/CONTAINERS.md):
  * grand-challenge: /input/inputs.json and /input/images/<slug>/*.mha|tif -> the three outputs
    (likelihood, fovea point, disc segmentation), each under its own slug in /output
  * PALM batch: every image under /input -> all the PALM submission files in /output
"""

from palm_algos import serve

if __name__ == "__main__":
    raise SystemExit(serve.main(serve.ALL))
