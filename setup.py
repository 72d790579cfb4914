# Shim so Beam's `--setup_file ./setup.py` can package quarry for remote
# workers (Dataflow, Flink, Spark); all metadata lives in pyproject.toml.
from setuptools import setup

setup()
