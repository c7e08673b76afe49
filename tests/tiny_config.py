"""Config file for CLI tests: the tiny digits setup of tests/util.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import tiny_config  # noqa: E402


def get_config():
    return tiny_config()
