"""Print requirements from pyproject.toml, one per line, so it stays the one place they are named.

    python3 project_deps.py pyproject.toml                 # core dependencies (no torch)
    python3 project_deps.py pyproject.toml --extra models  # an optional-dependency group
    python3 project_deps.py pyproject.toml --build-system  # what building palm itself needs

Used on the host to fill the wheelhouse and inside image builds to install the same list.
"""

import argparse
import tomllib

parser = argparse.ArgumentParser()
parser.add_argument("pyproject")
group = parser.add_mutually_exclusive_group()
group.add_argument("--extra")
group.add_argument("--build-system", action="store_true")
args = parser.parse_args()

with open(args.pyproject, "rb") as f:
    project = tomllib.load(f)
if args.build_system:
    requirements = project["build-system"]["requires"]
elif args.extra:
    requirements = project["project"]["optional-dependencies"][args.extra]
else:
    requirements = project["project"]["dependencies"]
for requirement in requirements:
    print(requirement)
